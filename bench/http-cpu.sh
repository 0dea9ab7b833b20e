#!/usr/bin/env bash
# Where the CPU goes for small HTTP requests: syscalls, context switches and CPU time per request
# of the tunnel's server and client processes during `wrk -t2 -c50`, for rustunnel (TLS data
# connections, or plain with --plain) and rathole (plain TCP transport), round after round.
# Needs wrk, nginx, perf (linux-perf) and rathole on PATH; rustunnel binaries from
# RUSTUNNEL_BIN (default target/release).
# Usage: bench/http-cpu.sh [ROUNDS] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
secs="${2:-4}"
bin="${RUSTUNNEL_BIN:-target/release}"
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. bench/common.sh

app=$(port)
start_nginx "$work" "$app" hello

# measure NAME SERVER_PID CLIENT_PID URL [HOST]: one wrk run with perf stat on both processes.
measure() {
  local name=$1 s=$2 c=$3 url=$4 host=${5:-}
  perf stat -e raw_syscalls:sys_enter,context-switches,cpu-clock -p "$s" -o "$work/s.txt" -- sleep "$secs" &
  local ps=$!
  perf stat -e raw_syscalls:sys_enter,context-switches,cpu-clock -p "$c" -o "$work/c.txt" -- sleep "$secs" &
  local pc=$!
  if [ -n "$host" ]; then wrk -t2 -c50 -d"${secs}s" -H "Host: $host" "$url" >"$work/wrk.txt"; else wrk -t2 -c50 -d"${secs}s" "$url" >"$work/wrk.txt"; fi
  wait "$ps" "$pc"
  python3 - "$name" "$work" <<'PY'
import re, sys
name, work = sys.argv[1], sys.argv[2]
wrk = open(f"{work}/wrk.txt").read()
n = int(re.search(r"(\d+) requests in", wrk).group(1))
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
def read(f):
    v = {}
    for line in open(f):
        m = re.match(r"\s*([\d,.]+)\s+(msec\s+)?(\S+)", line)
        if m and m.group(3) in ("raw_syscalls:sys_enter", "context-switches", "cpu-clock"):
            v[m.group(3)] = float(m.group(1).replace(",", ""))
    return v
out = [f"{name:14} {rate:9.0f} req/s"]
for who, f in (("server", "s.txt"), ("client", "c.txt")):
    v = read(f"{work}/{f}")
    out.append(f"{who}: {v['raw_syscalls:sys_enter'] / n:.2f} syscalls, {v['context-switches'] / n:.2f} switches, "
               f"{v['cpu-clock'] * 1000 / n:.1f} us per request")
print("  ".join(out))
PY
}

rustunnel() {
  local plain=$1 ctl http s c
  ctl=$(port); http=$(port)
  local sflags=() cflags=()
  if [ "$plain" = 1 ]; then sflags=(--allow-plain-data); cflags=(--plain-data); fi
  "$bin/rustunnel-server" --dev "${sflags[@]}" --data-dir "$work/d" --control-addr "127.0.0.1:$ctl" \
    --api-addr off --http-addr "127.0.0.1:$http" --https-addr off >"$work/server.log" 2>&1 &
  s=$!; pids+=($s)
  sleep 1
  "$bin/rustunnel" http "$app" --subdomain cpu --server "127.0.0.1:$ctl" --insecure "${cflags[@]}" --json \
    >"$work/client.log" 2>&1 &
  c=$!; pids+=($c)
  sleep 1.5
  measure "rustunnel$([ "$plain" = 1 ] && echo -plain)" "$s" "$c" "http://127.0.0.1:$http/" cpu.localhost
  kill "$c" "$s"; wait "$c" "$s" 2>/dev/null || true
}

rathole_plain() {
  local ctl http s c
  ctl=$(port); http=$(port)
  cat >"$work/rs.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$ctl"
default_token = "bench-token"
[server.transport]
type = "tcp"
[server.transport.tcp]
nodelay = true
[server.services.http]
bind_addr = "127.0.0.1:$http"
nodelay = true
EOF
  cat >"$work/rc.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$ctl"
default_token = "bench-token"
[client.transport]
type = "tcp"
[client.transport.tcp]
nodelay = true
[client.services.http]
local_addr = "127.0.0.1:$app"
nodelay = true
EOF
  rathole --server "$work/rs.toml" >"$work/rs.log" 2>&1 & s=$!; pids+=($s)
  sleep 0.5
  rathole --client "$work/rc.toml" >"$work/rc.log" 2>&1 & c=$!; pids+=($c)
  sleep 1.5
  curl -s "http://127.0.0.1:$http/" >/dev/null || true
  measure rathole-plain "$s" "$c" "http://127.0.0.1:$http/"
  kill "$c" "$s"; wait "$c" "$s" 2>/dev/null || true
}

for r in $(seq "$rounds"); do
  echo "round $r"
  rustunnel 1
  rustunnel 0
  rathole_plain
done

#!/usr/bin/env bash
# HTTP/2 through the HTTPS edge, for one build or several side by side: h2load against nginx
# behind an HTTP tunnel, steady (10 connections x 10 streams) and a cold burst (the first 200
# requests of a new tunnel, 100 streams at once on one connection).
# Usage: bench/h2.sh [--rounds N] [BUILD...]   BUILD: a git revision (built in a worktree) or a
# directory holding rustunnel-server and rustunnel; default: the working tree's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=5
if [ "${1:-}" = "--rounds" ]; then rounds="$2"; shift 2; fi
need=()
for t in h2load nginx; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=("${need[@]/h2load/nghttp2-client}")
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]/nginx/nginx-light}" >/dev/null
fi
work=$(mktemp -d)
chmod 711 "$work"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; for w in "$work"/tree-*; do [ -d "$w" ] && git worktree remove --force "$w"; done; true' EXIT

# Each build's binaries in a directory of their own.
builds=()
[ $# -eq 0 ] && set -- .
for b in "$@"; do
  if [ "$b" = . ]; then
    cargo build --release --locked --bin rustunnel-server --bin rustunnel
    builds+=("${CARGO_TARGET_DIR:-target}/release")
  elif [ -d "$b" ]; then
    builds+=("$b")
  else
    tree="$work/tree-$b"
    git worktree add --detach "$tree" "$b" >/dev/null
    (cd "$tree" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" cargo build --release --locked --bin rustunnel-server --bin rustunnel)
    mkdir -p "$work/bin-$b"
    cp "${CARGO_TARGET_DIR:-$root/target}/release/"{rustunnel-server,rustunnel} "$work/bin-$b/"
    builds+=("$work/bin-$b")
  fi
done

. bench/common.sh
app=$(port)
start_nginx "$work" "$app" "hello from nginx"

# One measurement: start a server and a client of build $1, run h2load with $2 connections,
# $3 streams each, $4 requests; prints the requests per second and the time taken.
measure() {
  local bin=$1 ctl https d
  ctl=$(port); https=$(port); d=$(mktemp -d -p "$work")
  "$bin/rustunnel-server" --dev --data-dir "$d/data" --control-addr "127.0.0.1:$ctl" --api-addr off \
    --http-addr off --https-addr "127.0.0.1:$https" --tcp-ports 21000-21009 --udp-ports 21000-21009 \
    >"$d/server.log" 2>&1 &
  local s=$!
  sleep 0.5
  "$bin/rustunnel" http "$app" --subdomain h2bench --server "127.0.0.1:$ctl" --insecure --json >"$d/client.log" 2>&1 &
  local c=$!
  for _ in $(seq 100); do grep -q tunnel_ready "$d/client.log" && break; sleep 0.05; done
  h2load -n "$4" -c "$2" -m "$3" -H ':authority: h2bench.localhost' "https://127.0.0.1:$https/" 2>&1 |
    awk '/finished in/ {gsub(",", ""); t=$3; r=$4} /succeeded/ {ok=$8} END {print r, t, ok}'
  kill "$c" "$s" 2>/dev/null; wait "$c" "$s" 2>/dev/null || true
}

results="$work/results"
for r in $(seq "$rounds"); do
  for i in "${!builds[@]}"; do
    read -r rps _ ok < <(measure "${builds[$i]}" 10 10 30000)
    read -r _ burst _ < <(measure "${builds[$i]}" 1 100 200)
    echo "$i $rps $burst $ok" >> "$results"
    echo "round $r, ${builds[$i]}: $rps req/s steady ($ok ok), cold burst $burst" >&2
  done
done
python3 - "$results" "${builds[@]}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("| build | HTTP/2 req/s (10 conns x 10 streams) | cold burst of 200 (ms) |")
print("|---|---|---|")
for i, b in enumerate(sys.argv[2:]):
    mine = [r for r in rows if r[0] == str(i)]
    rps = statistics.median(float(r[1]) for r in mine)
    ms = statistics.median(float(r[2].rstrip("ms")) * (1000 if not r[2].endswith("ms") else 1) for r in mine)
    name = b.rsplit("/bin-", 1)[1] if "/bin-" in b else b
    print(f"| {name} | {rps:,.0f} | {ms:.1f} |")
EOF

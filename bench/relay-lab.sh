#!/usr/bin/env bash
# Reference figures for the plain single stream: iperf3 through two chained one-hop relays
# (the two hops a plain tunnel adds) beside a direct run, round by round: rustunnel's own
# splice copy on tokio, and the simplest blocking relay (a thread per direction, splice(2)).
# Usage: bench/relay-lab.sh [ROUNDS] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-4}"
command -v iperf3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null; }
cargo build --release --locked -p rustunnel-transport --example splice_relay
relay="${CARGO_TARGET_DIR:-target}/release/examples/splice_relay"
. bench/common.sh
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
srv=$(port)
iperf3 -s -p "$srv" >/dev/null 2>&1 & pids+=($!)
declare -A entry
for mode in tokio threads; do
  hop=$(port); entry[$mode]=$(port)
  "$relay" "$mode" "127.0.0.1:$hop" "127.0.0.1:$srv" & pids+=($!)
  "$relay" "$mode" "127.0.0.1:${entry[$mode]}" "127.0.0.1:$hop" & pids+=($!)
done
sleep 0.5
gbps() {
  iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -J |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)'
}
out=$(mktemp)
for r in $(seq "$rounds"); do
  d=$(gbps "$srv"); t=$(gbps "${entry[tokio]}"); b=$(gbps "${entry[threads]}")
  echo "$d $t $b" >>"$out"
  printf 'round %s: direct %.2f  tokio splice %.2f  blocking threads %.2f Gbit/s\n' "$r" "$d" "$t" "$b"
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs)
print(f"median of per-round ratios to direct: tokio splice {med([t / d for d, t, _ in rows]):.0%}, "
      f"blocking threads {med([b / d for d, _, b in rows]):.0%}")
PY
rm -f "$out"

#!/usr/bin/env bash
# Reruns the side-by-side benchmarks: installs the tools, builds release binaries, runs bench.py.
# Usage: bench/run.sh [--runs N] [--secs S] [--held N] [--json out.json] [--only PART ...] [--link-delay MS]
# PART: tcp http download latency udp conn-rate https-edge h2 tunnels (the default runs all).
# RUSTUNNEL_BIN=DIR uses the release binaries in DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for t in iperf3 wrk nginx openssl curl h2load; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  need=("${need[@]/nginx/nginx-light}")
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]/h2load/nghttp2-client}" >/dev/null
fi
if ! command -v rathole >/dev/null && [ ! -x bench/.work/bin/rathole ]; then
  # rathole 0.5.0's own lock file pins `time` 0.3.29, which newer compilers refuse
  # (type inference change); without --locked cargo picks the fixed 0.3.x releases.
  cargo install --locked --root bench/.work rathole || cargo install --root bench/.work rathole
fi
if [ -z "${RUSTUNNEL_BIN:-}" ]; then
  cargo build --release --locked --bin rustunnel-server --bin rustunnel
  # The delay relay of --link-delay (a long link between tunnel clients and servers).
  cargo build --release --locked -p rustunnel-transport --example delay_relay
fi
# Many held connections and tunnels need more descriptors than the usual 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/bench.py "$@"

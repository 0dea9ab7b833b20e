#!/usr/bin/env bash
# Reruns the side-by-side benchmarks: installs the tools, builds release binaries, runs bench.py.
# Usage: bench/run.sh [--runs N] [--secs S] [--held N] [--json out.json] [--only download --link-delay MS]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for t in iperf3 wrk nginx openssl curl; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]/nginx/nginx-light}" >/dev/null
fi
if ! command -v rathole >/dev/null && [ ! -x bench/.work/bin/rathole ]; then
  # rathole 0.5.0's own lock file pins `time` 0.3.29, which newer compilers refuse
  # (type inference change); without --locked cargo picks the fixed 0.3.x releases.
  cargo install --locked --root bench/.work rathole || cargo install --root bench/.work rathole
fi
cargo build --release --locked --bin rustunnel-server --bin rustunnel
# The delay relay of --link-delay (a long link between tunnel clients and servers).
cargo build --release --locked -p rustunnel-proto --example delay_relay
exec python3 bench/bench.py "$@"

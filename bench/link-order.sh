#!/usr/bin/env bash
# Regenerates the profile-guided function order of the release binaries (crates/*/link.order):
# builds them, runs them under callgrind through start-up, idle, traffic and shutdown
# (bench/link_order.py), then relinks them with the new order.
# Usage: bench/link-order.sh [--idle SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for t in valgrind curl; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --bin rustunnel-server --bin rustunnel
python3 bench/link_order.py --bin "$target/release" "$@"
cargo build --release --locked --bin rustunnel-server --bin rustunnel

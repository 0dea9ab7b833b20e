#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a short fixed time from its committed seeds,
# so a decoder that panics, hangs or grows its memory on input fails CI.
# Usage: .ci/fuzz.sh [seconds per target]   (default 8; FUZZ_SECONDS also sets it)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-${FUZZ_SECONDS:-8}}"

# cargo-fuzz needs a nightly compiler for the sanitizer and coverage flags.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# cargo fuzz has no --locked: check the fuzz workspace's own lock file first. If this fails, a
# crate's dependencies changed: refresh fuzz/Cargo.lock as fuzz/README.md says and commit it.
cargo +nightly fetch --locked

# The fuzz crate is outside the main workspace, so `cargo fmt --all` there does not see it.
cargo fmt --check

start=$(date +%s)
cargo +nightly fuzz build
built=$(date +%s)
echo "fuzz: targets built in $((built - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
  # New inputs go to a scratch corpus; the committed seeds are only read.
  mkdir -p "$work/$target"
  log="$work/$target.log"
  if ! cargo +nightly fuzz run "$target" "$work/$target" "seeds/$target" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
    >"$log" 2>&1; then
    # The panic or sanitizer report and the input; every other target still runs.
    grep -E -A3 'panicked at|ERROR: ' "$log" >&2 || true
    sed -n '/^SUMMARY/,$p' "$log" | grep -v '^stat::' >&2
    echo "fuzz: $target failed; the input that shows it is under fuzz/artifacts/$target/" >&2
    failed+=("$target")
    continue
  fi
  awk -v t="$target" '/^stat::number_of_executed_units/ {n=$2} /^stat::peak_rss_mb/ {m=$2}
    END {printf "fuzz: %s: %s runs, peak RSS %s MB\n", t, n, m}' "$log"
done
echo "fuzz: all targets ran in $(($(date +%s) - built)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi

#!/usr/bin/env bash
# Packaging checks, run after the tests (cargo reuses their build): every publishable crate
# packages with its metadata and README, each binary installs with `cargo install --locked
# --path` and runs, the systemd units verify, the Claude Code plugin validates and its
# marketplace adds with the real CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step() { printf '== %s (%ss)\n' "$1" "$SECONDS"; }

step "crate metadata and package contents"
cargo metadata --locked --format-version 1 --no-deps | python3 -c '
import json, sys
bad = []
for p in json.load(sys.stdin)["packages"]:
    if p["publish"] == []:
        continue
    for key in ("description", "license", "repository", "readme", "keywords", "categories"):
        if not p.get(key):
            bad.append(f"{p['"'"'name'"'"']}: no {key}")
sys.exit("\n".join(bad) or None)'
for crate in proto transport api-types agent client server cli mcp; do
  list=$(cargo package --locked --allow-dirty --list -p "rustunnel-$crate")
  grep -qx README.md <<<"$list" || { echo "rustunnel-$crate: README.md not packaged" >&2; exit 1; }
done

step "cargo install --locked --path for each binary"
for crate in server cli mcp; do
  cargo install --quiet --locked --debug --path "crates/rustunnel-$crate" --root "$tmp/install"
done
bin=$tmp/install/bin
"$bin/rustunnel-server" --version
"$bin/rustunnel" --version
"$bin/rustunnel-mcp" --version
"$bin/rustunnel" completions bash > "$tmp/rustunnel.bash" && bash -n "$tmp/rustunnel.bash"
"$bin/rustunnel-server" man --out-dir "$tmp/man" >/dev/null && test -s "$tmp/man/rustunnel-server.1"

step "systemd units"
command -v systemd-analyze >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
}
# verify checks that ExecStart's binary exists: point the units at the installed ones.
mkdir -p "$tmp/units"
for unit in deploy/systemd/*.service; do
  sed "s|/usr/local/bin/|$bin/|g" "$unit" > "$tmp/units/$(basename "$unit")"
done
systemd-analyze verify "$tmp"/units/*.service
for unit in "$tmp"/units/*.service; do
  # Exposure as systemd scores it (shown 0-10, threshold in tenths): at most 2.0.
  systemd-analyze security --offline=yes --threshold=20 "$unit" >/dev/null
done

bash .ci/plugin.sh
bash .ci/self-hosting.sh "$bin"
step "done"

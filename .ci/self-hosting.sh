#!/usr/bin/env bash
# Runs the `sh` blocks of docs/self-hosting.md in order, as an operator would on a fresh
# machine, but on loopback: in a network and mount namespace of their own (the guide's fixed
# ports and /etc, /var paths touch nothing outside), with DOMAIN=localhost, and a throwaway CA
# standing in for the public one (the one difference: `rustunnel` and `curl` are told to trust
# it). Usage: .ci/self-hosting.sh DIR_WITH_THE_BINARIES
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cd "${1:?directory holding rustunnel-server, rustunnel and rustunnel-mcp}" && pwd)
echo "== self-hosting guide on loopback"
if [ "$(id -u)" != 0 ]; then
  echo "skipped: needs root for its namespaces"
  exit 0
fi
need=()
for tool in openssl sqlite3 curl python3 unshare; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl sqlite3 curl python3 util-linux >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - docs/self-hosting.md > "$work/guide.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
    print(block)
PY
# The guide's paths exist on the host only as empty mount points.
mkdir -p /etc/rustunnel /var/lib/rustunnel /var/backups
unshare --net --mount --fork env BIN="$bin" WORK="$work" bash -euo pipefail -c '
  ip link set lo up 2>/dev/null || python3 -c "import socket" # lo is up by default in newer kernels
  for d in /etc/rustunnel /var/lib/rustunnel /var/backups; do mount -t tmpfs tmpfs "$d"; done
  # A CA and a certificate for localhost, its wildcard and the guide'\''s name.
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=guide CA" \
    -addext basicConstraints=critical,CA:TRUE -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout /etc/rustunnel/privkey.pem -out leaf.csr 2>/dev/null
  printf "subjectAltName=DNS:localhost,DNS:*.localhost,DNS:myapp.localhost\n" > san.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext \
    -out /etc/rustunnel/fullchain.pem 2>/dev/null
  # Wrappers (scripts, not functions, so `$!` of a background one is the real process).
  mkdir -p "$WORK/trust"
  printf "#!/bin/sh\nexec \"%s/rustunnel\" \"\$@\" --ca \"%s\"\n" "$BIN" "$WORK/ca.pem" > "$WORK/trust/rustunnel"
  printf "#!/bin/sh\nexec \"%s\" --cacert \"%s\" \"\$@\"\n" "$(command -v curl)" "$WORK/ca.pem" > "$WORK/trust/curl"
  chmod +x "$WORK/trust/rustunnel" "$WORK/trust/curl"
  export PATH="$WORK/trust:$BIN:$PATH" DOMAIN=localhost
  stop() { for p in ${CLIENT_PID:-} ${APP_PID:-} ${SERVER_PID:-}; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
  trap stop EXIT
  cd /
  . "$WORK/guide.sh"
  # What the guide promises along the way.
  grep -q "configuration reloaded: applied log_level debug" <(for _ in $(seq 1 100); do grep -h "configuration reloaded" /var/lib/rustunnel/server.log && break; sleep 0.1; done)
  test -s /var/backups/rustunnel.db && test -s /var/backups/rustunnel-data.tgz
  echo "guide: every sh block ran on loopback"
'

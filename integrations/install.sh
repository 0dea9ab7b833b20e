#!/usr/bin/env bash
# Installs rustunnel-mcp (and the rustunnel CLI) with cargo and registers the MCP server with the
# agent hosts found under $HOME: Claude Code, Claude Desktop, Codex, Cursor, Windsurf, Cline.
# Idempotent: running it again updates the same entries and leaves everything else alone.
# Network: none beyond what `cargo install` itself fetches.
#
#   integrations/install.sh [--server HOST:PORT] [--api URL] [--insecure] [--with-token]
#                           [--skip-build] [--bin PATH] [--name NAME]
#
#   --server      control plane the MCP server uses        (default localhost:4040)
#   --api         management API base URL                  (default http://localhost:4041)
#   --insecure    skip TLS verification (dev server with a self-signed certificate)
#   --with-token  write the current $RUSTUNNEL_TOKEN into each host's config (GUI apps such as
#                 Claude Desktop do not see your shell's environment). Off by default.
#   --skip-build  do not run cargo; use the rustunnel-mcp already installed (or --bin)
#   --bin PATH    rustunnel-mcp binary to register (default: the one cargo installed)
#   --name NAME   server name in the hosts' configs (default rustunnel)
set -euo pipefail

server="localhost:4040"
api="http://localhost:4041"
insecure=0
with_token=0
skip_build=0
bin=""
name="rustunnel"

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --server) server="${2:?--server needs a value}"; shift 2 ;;
    --api) api="${2:?--api needs a value}"; shift 2 ;;
    --insecure) insecure=1; shift ;;
    --with-token) with_token=1; shift ;;
    --skip-build) skip_build=1; shift ;;
    --bin) bin="${2:?--bin needs a value}"; shift 2 ;;
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '%s\n' "$*"; }
: "${HOME:?HOME must be set}"

# ---------------------------------------------------------------- build / install
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ "$skip_build" = 0 ]; then
  command -v cargo >/dev/null || { echo "install.sh: cargo not found; install Rust from rustup.rs first" >&2; exit 1; }
  if [ -f "$repo/crates/rustunnel-mcp/Cargo.toml" ]; then
    say "building and installing rustunnel-mcp and rustunnel from $repo (cargo install --path ...)"
    cargo install --locked --quiet --path "$repo/crates/rustunnel-mcp"
    cargo install --locked --quiet --path "$repo/crates/rustunnel-cli"
  else
    say "installing rustunnel-mcp and rustunnel with cargo install"
    cargo install --locked --quiet rustunnel-mcp rustunnel-cli
  fi
fi
if [ -z "$bin" ]; then
  if [ -x "$cargo_bin/rustunnel-mcp" ]; then bin="$cargo_bin/rustunnel-mcp"
  elif command -v rustunnel-mcp >/dev/null; then bin="$(command -v rustunnel-mcp)"
  else echo "install.sh: rustunnel-mcp not found (run without --skip-build, or pass --bin)" >&2; exit 1
  fi
fi
say "rustunnel-mcp: $bin"

# The command every host runs. Absolute path: GUI hosts do not have ~/.cargo/bin on PATH.
args=(--server "$server" --api "$api")
[ "$insecure" = 1 ] && args+=(--insecure)
token=""
if [ "$with_token" = 1 ]; then
  token="${RUSTUNNEL_TOKEN:-}"
  [ -n "$token" ] || { echo "install.sh: --with-token but RUSTUNNEL_TOKEN is not set" >&2; exit 2; }
fi

registered=0
skipped=()

# ---------------------------------------------------------------- JSON hosts
# Merges {"<key>": {"<name>": {command, args, env}}} into a JSON file, keeping everything else.
have_python=0
command -v python3 >/dev/null && have_python=1

json_register() { # file key label
  local file="$1" key="$2" label="$3"
  if [ "$have_python" = 0 ]; then
    skipped+=("$label ($file): python3 is needed to edit JSON; add the entry by hand (docs/agents.md)")
    return
  fi
  mkdir -p "$(dirname "$file")"
  local result
  result="$(RT_FILE="$file" RT_KEY="$key" RT_NAME="$name" RT_BIN="$bin" RT_TOKEN="$token" python3 - "${args[@]}" <<'PY'
import json, os, sys
path, key, name = os.environ["RT_FILE"], os.environ["RT_KEY"], os.environ["RT_NAME"]
entry = {"command": os.environ["RT_BIN"], "args": sys.argv[1:]}
if os.environ.get("RT_TOKEN"):
    entry["env"] = {"RUSTUNNEL_TOKEN": os.environ["RT_TOKEN"]}
data = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError as e:
            print("invalid:%s" % e)
            sys.exit(0)
if not isinstance(data, dict):
    print("invalid:top level is not an object")
    sys.exit(0)
servers = data.setdefault(key, {})
old = servers.get(name)
if old is not None and "env" in old and "env" not in entry:
    entry["env"] = old["env"]  # keep a token the user put there
if old == entry:
    print("unchanged")
    sys.exit(0)
servers[name] = entry
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
print("updated" if old is not None else "added")
PY
)"
  case "$result" in
    invalid:*) skipped+=("$label ($file): not valid JSON (${result#invalid:}); left untouched") ;;
    *) say "$label: $result $name in $file"; registered=$((registered + 1)) ;;
  esac
}

# Claude Desktop
for d in "$HOME/Library/Application Support/Claude" "$HOME/.config/Claude" "${APPDATA:-/nonexistent}/Claude"; do
  [ -d "$d" ] && json_register "$d/claude_desktop_config.json" mcpServers "Claude Desktop"
done
# Cursor (global)
[ -d "$HOME/.cursor" ] && json_register "$HOME/.cursor/mcp.json" mcpServers "Cursor"
# Windsurf
[ -d "$HOME/.codeium/windsurf" ] && json_register "$HOME/.codeium/windsurf/mcp_config.json" mcpServers "Windsurf"
# Cline (VS Code extension saoudrizwan.claude-dev)
for d in "$HOME/Library/Application Support/Code/User/globalStorage/saoudrizwan.claude-dev" \
         "$HOME/.config/Code/User/globalStorage/saoudrizwan.claude-dev"; do
  [ -d "$d" ] && json_register "$d/settings/cline_mcp_settings.json" mcpServers "Cline"
done

# ---------------------------------------------------------------- Codex (TOML)
if [ -d "$HOME/.codex" ]; then
  cfg="$HOME/.codex/config.toml"
  toml_str() { local s="${1//\\/\\\\}"; printf '"%s"' "${s//\"/\\\"}"; }
  section="[mcp_servers.$name]"$'\n'"command = $(toml_str "$bin")"$'\n'"args = ["
  sep=""
  for a in "${args[@]}"; do section+="$sep$(toml_str "$a")"; sep=", "; done
  section+="]"
  [ -n "$token" ] && section+=$'\n'"env = { RUSTUNNEL_TOKEN = $(toml_str "$token") }"
  touch "$cfg"
  # Drop our previous section (up to the next table header), keep everything else.
  rest="$(awk -v hdr="[mcp_servers.$name]" '
    $0 == hdr { skip = 1; next }
    skip && /^\[/ { skip = 0 }
    !skip { print }' "$cfg")"
  rest="$(printf '%s\n' "$rest" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}')"
  if [ -n "$rest" ]; then new="$rest"$'\n\n'"$section"; else new="$section"; fi
  if [ "$(cat "$cfg")" = "$new" ]; then
    say "Codex: unchanged $name in $cfg"
  else
    printf '%s\n' "$new" > "$cfg.tmp" && mv "$cfg.tmp" "$cfg"
    say "Codex: wrote [mcp_servers.$name] in $cfg"
  fi
  registered=$((registered + 1))
fi

# ---------------------------------------------------------------- Claude Code (CLI)
if command -v claude >/dev/null; then
  env_args=()
  [ -n "$token" ] && env_args=(-e "RUSTUNNEL_TOKEN=$token")
  # remove + add = idempotent update of the user-scope entry.
  claude mcp remove --scope user "$name" >/dev/null 2>&1 || true
  # -e is variadic in the claude CLI: keep it before --scope so it cannot swallow the name.
  if claude mcp add ${env_args[@]+"${env_args[@]}"} --scope user "$name" -- "$bin" "${args[@]}" >/dev/null; then
    say "Claude Code: registered $name (claude mcp add --scope user)"
    registered=$((registered + 1))
  else
    skipped+=("Claude Code: 'claude mcp add' failed; see docs/agents.md for .mcp.json")
  fi
fi

# ---------------------------------------------------------------- summary
for s in "${skipped[@]+"${skipped[@]}"}"; do say "skipped: $s"; done
if [ "$registered" = 0 ]; then
  say "no MCP host found under $HOME; see docs/agents.md for copy-paste configuration"
else
  say "done: rustunnel-mcp registered with $registered host(s)."
fi
if [ "$with_token" = 0 ]; then
  say "token: not written anywhere. Set RUSTUNNEL_TOKEN in the host's environment, rerun with --with-token, or pass \`token\` in tool calls (a loopback dev server needs none)."
fi

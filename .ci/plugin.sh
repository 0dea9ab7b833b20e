#!/usr/bin/env bash
# The Claude Code plugin as its README says to install it, with the real Claude Code CLI and a
# throwaway HOME (no login or network needed): the manifests validate, the repository adds as
# a marketplace, the plugin installs from it with its MCP server and its skill.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== Claude Code plugin"
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
# Into a prefix of its own, not onto the PATH: the install script's tests expect no agent host.
npm install --silent --prefix "$home/npm" @anthropic-ai/claude-code >/dev/null
claude() { "$home/npm/node_modules/.bin/claude" "$@"; }
export HOME=$home
claude plugin validate integrations/claude-code-plugin
claude plugin validate .
claude plugin marketplace add "$PWD"
claude plugin install rustunnel@rustunnel
installed=$(find "$home/.claude/plugins/cache/rustunnel/rustunnel" -mindepth 1 -maxdepth 1 -type d | head -1)
test -n "$installed"
cmp "$installed/skills/tunnel-etiquette/SKILL.md" integrations/claude-code-plugin/skills/tunnel-etiquette/SKILL.md
grep -q rustunnel-mcp "$installed/.mcp.json"
claude plugin list | grep -q "rustunnel@rustunnel"

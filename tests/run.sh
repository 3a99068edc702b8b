#!/usr/bin/env bash
# bpm's whole test suite, with what it needs installed first: the command
# README.md gives and .ci/run calls. On a fresh Debian or Ubuntu machine it
# installs what is missing with apt-get (through sudo when not root): a C
# toolchain, CA certificates, redis-server, chromium, chromium-driver and
# python3-venv, nodejs and npm, tmux, openssl; makes the Python virtualenvs
# for the MCP client and the browser test and the npm test tools and MCP
# servers under target/, and then runs
# `cargo test --workspace` (arguments are passed on to it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup); rust-toolchain.toml pins the version" >&2
  exit 1
fi

missing=()
# A C compiler and linker (cargo links with cc; ring builds C), and the
# certificates pip needs to reach PyPI: a minimal Debian has neither.
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
# A self-signed certificate for the HTTPS probe's test server.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (apt-get)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
redis-server --version
/usr/bin/chromium --version 2>/dev/null || true

# Each Python test client lives in its own virtualenv under target/, pinned.
venv() {
  local dir="target/$1" requirements="$2"
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$PWD/$dir/bin/python"
}
echo "== Python test clients (pip)"
BPM_MCP_PYTHON="$(venv mcp-venv tests/mcp/requirements.txt)"
BPM_WEB_PYTHON="$(venv web-venv tests/web/requirements.txt)"
export BPM_MCP_PYTHON BPM_WEB_PYTHON
"$BPM_WEB_PYTHON" -c "import selenium; print('selenium', selenium.__version__)"

# VS Code's own JSON-with-comments parser reads what `bpm agents setup`
# writes for it (tests/agents.rs), and real stdio MCP servers run through
# `bpm mcp-run` (tests/mcp_client.rs): pinned, under target/npm.
echo "== npm test tools (under target/npm)"
npm_packages=(jsonc-parser@3.3.1
  @modelcontextprotocol/server-filesystem@2026.8.31
  @modelcontextprotocol/server-memory@2026.8.31
  @modelcontextprotocol/server-everything@2026.8.31)
npm_missing=0
for p in "${npm_packages[@]}"; do
  [ -d "target/npm/node_modules/${p%@*}" ] || npm_missing=1
done
[ "$npm_missing" = 0 ] ||
  npm install --prefix target/npm --no-audit --no-fund --silent "${npm_packages[@]}"
BPM_NODE_MODULES="$PWD/target/npm/node_modules"
export BPM_NODE_MODULES

echo "== cargo test --workspace"
# Tests clean up after themselves: they get a temporary folder of their own,
# and whatever they leave in it fails the run.
tmp="$(mktemp -d /tmp/bpm-tests.XXXXXX)"
status=0
# Every test binary runs even when one fails: one failure never hides the rest.
# One build of the workspace, nothing compiled twice: a build without file
# watches or TLS (bpm-embed alone) is checked by the unit tests of the
# refusals it gives, and compiled by .ci/run's clippy step.
TMPDIR="$tmp" cargo test --workspace --no-fail-fast "$@" || status=$?
left="$(find "$tmp" -mindepth 1 -maxdepth 1 | head -20)"
rm -rf "$tmp"
if [ "$status" = 0 ] && [ -n "$left" ]; then
  echo "tests passed but left these behind in TMPDIR:"
  echo "$left"
  exit 1
fi
exit "$status"

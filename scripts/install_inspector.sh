#!/usr/bin/env bash
# Install the MCP Inspector CLI (npm @modelcontextprotocol/inspector), the second official client
# that tests/test_inspector.py drives against mcp_fast.
#
#   bash scripts/install_inspector.sh [VERSION]        (default 2.12.0)
#
# Node 22 comes from scripts/install_conformance.sh (which installs it, and the conformance suite,
# when missing). The Inspector goes under <repo>/.cache/inspector/<VERSION>/ (gitignored).
# Idempotent and fast when everything is present (no network access then).
# stdout: two lines, the Node 22 bin dir and the Inspector's launcher script. Progress goes to
# stderr; a non-zero exit code (and a message on stderr) if anything could not be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${1:-2.12.0}"
PKG="@modelcontextprotocol/inspector"
DIR="${MCP_INSPECTOR_CACHE:-$ROOT/.cache/inspector}/$VERSION"
LAUNCHER="$DIR/node_modules/$PKG/clients/launcher/build/index.js"

log() { echo "[install_inspector] $*" >&2; }
die() { echo "[install_inspector] ERROR: $*" >&2; exit 1; }

NODE_BIN_DIR="$(bash "$ROOT/scripts/install_conformance.sh")" || die "no Node 22 (install_conformance.sh failed)"
export PATH="$NODE_BIN_DIR:$PATH"

mkdir -p "$DIR"
# Serialize concurrent runs (two installs into one directory would corrupt it).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR/.install.lock"
    flock 9
fi

inspector_ok() {
    [ -f "$LAUNCHER" ] || return 1
    node -e '
        const v = require(process.argv[1]).version;
        process.exit(v === process.argv[2] ? 0 : 1);
    ' "$DIR/node_modules/$PKG/package.json" "$VERSION" 2>/dev/null
}

if ! inspector_ok; then
    log "installing $PKG@$VERSION into $DIR"
    [ -f "$DIR/package.json" ] || echo '{"private": true}' >"$DIR/package.json"
    npm install --prefix "$DIR" --no-audit --no-fund --save-exact --loglevel=error "$PKG@$VERSION" >&2 \
        || die "npm install $PKG@$VERSION failed"
    inspector_ok || die "$PKG@$VERSION not usable in $DIR after install"
fi

echo "$NODE_BIN_DIR"
echo "$LAUNCHER"

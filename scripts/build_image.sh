#!/usr/bin/env bash
# Build deploy/Dockerfile into an image, run it, and check it as an operator would. Needs a
# container engine, so it is not part of CI: run it by hand where one is at hand.
#
#   bash scripts/build_image.sh                 # base image: python:3.12-slim-bookworm
#   bash scripts/build_image.sh --debian-base   # base image made here from Debian's packages
#
# --debian-base makes the base with mmdebstrap (Debian bookworm: python3, python3-venv, passwd)
# and imports it, for a machine that reaches Debian's mirrors and PyPI but no image registry.
#
# The checks, in order (the first that fails stops the script with exit code 1):
#   1. the image builds (docker format, so that it keeps its HEALTHCHECK);
#   2. it runs as uid 10001, with the server as PID 1 (of the container's PID namespace);
#   3. an MCP initialize over HTTP answers with a session;
#   4. the image's HEALTHCHECK command passes (GET /health: needs main's built-in routes);
#   5. SIGTERM ends it with exit code 0 within its --shutdown-timeout.
#
# Settings (environment variables):
#   ENGINE=podman|docker   the engine (podman: Debian's `podman` package)
#   RUNNER=engine|chroot   how the image runs. `chroot` needs no OCI runtime: the image's files are
#                          mounted (podman image mount) and its ENTRYPOINT + CMD run as its USER,
#                          with its ENV and WORKDIR, in a PID namespace of their own (unshare +
#                          chroot, as root); for machines whose engine cannot start containers.
#   ENGINE_FLAGS, BUILD_FLAGS, RUN_FLAGS   extra flags for every engine command, build, run.
#   PORT                   the loopback port the check uses (18000)
#
# What ran on this project's machine (root in a container: no cgroup of its own, no
# CAP_SYS_RESOURCE, and a TLS-inspecting proxy whose CA pip must trust):
#   ENGINE_FLAGS="--storage-driver vfs --cgroup-manager cgroupfs" RUNNER=chroot \
#   BUILD_FLAGS="--isolation chroot -v /etc/pip.conf:/etc/pip.conf:ro \
#     -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro" \
#   bash scripts/build_image.sh --debian-base
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE="${ENGINE:-podman}"
RUNNER="${RUNNER:-engine}"
IMAGE="${IMAGE:-mcp-fast:0.1.0}"
NAME="mcp-fast-check-$$"
PORT="${PORT:-18000}"
BASE="python:3.12-slim-bookworm"
DEBIAN_BASE="localhost/mcp-fast-base:bookworm"
read -r -a ENGINE_FLAGS <<< "${ENGINE_FLAGS:-}"
read -r -a BUILD_FLAGS <<< "${BUILD_FLAGS:-}"
read -r -a RUN_FLAGS <<< "${RUN_FLAGS:-}"

log() { echo "[build_image] $*" >&2; }
die() { echo "[build_image] FAILED: $*" >&2; exit 1; }
engine() { "$ENGINE" "${ENGINE_FLAGS[@]}" "$@"; }
config() { engine image inspect --format "{{json .$1}}" "$IMAGE"; }
json() { python3 -c "import json, sys; value = json.load(sys.stdin); $1"; }

command -v "$ENGINE" >/dev/null || die "$ENGINE is not installed (Debian: apt-get install podman)"

# -- 1. build ---------------------------------------------------------------------------------
if [ "${1:-}" = "--debian-base" ]; then
    BASE="$DEBIAN_BASE"
    if engine image exists "$BASE" 2>/dev/null; then
        log "reusing the base image $BASE (remove it to make it again)"
    else
        command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (Debian: apt-get install mmdebstrap)"
        tarball="$(mktemp --suffix .tar)"
        log "making the base image from Debian's packages (mmdebstrap bookworm)"
        mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
            bookworm "$tarball"
        engine import --change 'CMD ["python3"]' "$tarball" "$BASE" >/dev/null
        rm -f "$tarball"
    fi
fi
log "1. building $IMAGE on $BASE"
engine build "${BUILD_FLAGS[@]}" --format docker --network host --build-arg "PYTHON_IMAGE=$BASE" \
    -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT" >&2 || die "the image did not build"
log "   $(engine image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"

SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
OVERRIDES=(MCP_FAST_HOST=127.0.0.1 "MCP_FAST_PORT=$PORT" "MCP_FAST_SESSION_SECRET=$SECRET")
HEALTHCHECK=()
while IFS= read -r word; do HEALTHCHECK+=("$word"); done < <(
    config HealthCheck | json 'test = value["Test"]; assert test[0] == "CMD", test; print("\n".join(test[1:]))'
)

# -- run it: with the engine, or its files with chroot ------------------------------------------
if [ "$RUNNER" = "engine" ]; then
    cleanup() { engine rm -f "$NAME" >/dev/null 2>&1 || true; }
    trap cleanup EXIT
    env_flags=()
    for pair in "${OVERRIDES[@]}"; do env_flags+=(-e "$pair"); done
    # Host networking: the check needs no bridge.
    engine run "${RUN_FLAGS[@]}" -d --name "$NAME" --network host "${env_flags[@]}" "$IMAGE" >/dev/null \
        || die "the container did not start (RUNNER=chroot runs the image without an OCI runtime)"
    in_image() { engine exec "$NAME" "$@"; }
    server_pid() { engine inspect --format '{{.State.Pid}}' "$NAME"; }
    stop_server() { engine stop -t 20 "$NAME" >/dev/null; engine inspect --format '{{.State.ExitCode}}' "$NAME"; }
else
    rootfs="$(engine image mount "$IMAGE")"
    cleanup() {
        # unshare ignores SIGTERM while it waits for its child: stop the server itself.
        if [ -n "${runner_pid:-}" ]; then
            kill -TERM "$(server_pid)" 2>/dev/null || true
            wait "$runner_pid" 2>/dev/null || true
        fi
        engine image umount "$IMAGE" >/dev/null 2>&1 || true
    }
    trap cleanup EXIT
    user="$(config Config | json 'print(value["User"])')"
    workdir="$(config Config | json 'print(value["WorkingDir"] or "/")')"
    mapfile -t image_env < <(config Config | json 'print("\n".join(value["Env"]))')
    mapfile -t command < <(config Config | json 'print("\n".join((value["Entrypoint"] or []) + (value["Cmd"] or [])))')
    in_image() {
        chroot --userspec="$user" "$rootfs" /usr/bin/env -i "${image_env[@]}" "${OVERRIDES[@]}" "$@"
    }
    # A PID namespace of its own, so the server is PID 1 there as in a container.
    unshare --pid --fork --kill-child chroot --userspec="$user" "$rootfs" \
        /usr/bin/env -i "${image_env[@]}" "${OVERRIDES[@]}" \
        /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "${command[@]}" &
    runner_pid=$!
    server_pid() { pgrep -P "$runner_pid" | head -1; }  # unshare's child: the server (sh exec'd it)
    stop_server() {
        kill -TERM "$(server_pid)"
        set +e; wait "$runner_pid"; local code=$?; set -e
        runner_pid=""
        echo "$code"
    }
fi

for _ in $(seq 1 150); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.1
done

# -- 2. user and PID 1 ------------------------------------------------------------------------
pid="$(server_pid)"
[ -n "$pid" ] || die "the server is not running"
uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
ns_pid="$(awk '/^NSpid:/ {print $NF}' "/proc/$pid/status")"
log "2. the server runs as uid $uid, PID $ns_pid in its namespace: $(tr '\0' ' ' < "/proc/$pid/cmdline")"
[ "$uid" = "10001" ] || die "the server runs as uid $uid, not 10001"
[ "$ns_pid" = "1" ] || die "the server is PID $ns_pid in its namespace, not 1"

# -- 3. MCP -----------------------------------------------------------------------------------
session="$(curl -s -o /dev/null -w '%header{mcp-session-id}' "http://127.0.0.1:$PORT/mcp" \
    -H 'Content-Type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"build_image","version":"1"}}}')"
[ -n "$session" ] || die "initialize gave no Mcp-Session-Id"
log "3. initialize: session ${session:0:24}..."

# -- 4. HEALTHCHECK ---------------------------------------------------------------------------
log "4. HEALTHCHECK: ${HEALTHCHECK[*]}"
health="$(in_image "${HEALTHCHECK[@]}" 2>&1)" || die "the HEALTHCHECK failed: $health"
log "   $health"

# -- 5. SIGTERM -------------------------------------------------------------------------------
started=$(date +%s)
code="$(stop_server)"
took=$(( $(date +%s) - started ))
[ "$code" = "0" ] || die "exit code $code after SIGTERM"
[ "$took" -le 11 ] || die "stopping took ${took}s (more than --shutdown-timeout)"
log "5. SIGTERM: exit code 0 after ${took}s"
log "all checks passed: $IMAGE"

#!/usr/bin/env bash
# Builds the CPU image with buildah (no Docker daemon, no container registry) and smoke-runs it.
#
# docker.io is unreachable here, so the Dockerfile's base (python:3.11-slim-bookworm) is replaced by
# a stand-in: a debootstrapped Debian bookworm with python3, pip, venv and the host's CA bundle
# (pip's TLS goes through an intercepting proxy). Debian's Python 3.11.2, not the official image:
# this proves the Dockerfile's steps and the result, not a byte-identical image.
# buildah 1.28 workarounds: `FROM base-${VARIANT}` only resolves with --layers and
# --skip-unused-stages=false, so the GPU base stage is built too (on the stand-in, a no-op).
# --format docker keeps HEALTHCHECK (the OCI format drops it).
# Smoke run: tiny model in /models, `hotserve serve` on 127.0.0.1, ready + one v2 infer,
# uid 10001, torch absent, SIGTERM drain exits 0. Storage stays out of the repo.
# Needs root, apt (buildah, debootstrap) and the project venv (onnx, for the tiny model).
# Environment: BH_ROOT (default /tmp/bh-root), BH_RUNROOT (/tmp/bh-run), IMAGE (localhost/hotserve:cpu).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${HOTSERVE_VENV:-$ROOT/.venv}/bin/python"
IMAGE="${IMAGE:-localhost/hotserve:cpu}"
STANDIN=localhost/python-standin:3.11
BH=(buildah --root "${BH_ROOT:-/tmp/bh-root}" --runroot "${BH_RUNROOT:-/tmp/bh-run}")
WORK="$(mktemp -d /tmp/hotserve-image.XXXXXX)"
ctr="" server_pid="" bh_pid=""
log() { printf 'build-image-offline: %s\n' "$*" >&2; }
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    [ -n "$bh_pid" ] && kill "$bh_pid" 2>/dev/null && wait "$bh_pid" 2>/dev/null || true
    [ -n "$ctr" ] && "${BH[@]}" rm "$ctr" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v buildah >/dev/null && command -v debootstrap >/dev/null \
    || apt-get install -y -qq buildah debootstrap >/dev/null

if ! "${BH[@]}" inspect --type image "$STANDIN" >/dev/null 2>&1; then
    mirror="$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
              | awk '/^(deb|URIs:) /{print $2; exit}')"
    log "debootstrap bookworm from ${mirror:=http://deb.debian.org/debian} (~40 s)"
    timeout 600 debootstrap --variant=minbase --include=python3-minimal bookworm "$WORK/rootfs" "$mirror" >/dev/null
    tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" . && rm -rf "$WORK/rootfs"
    c="$("${BH[@]}" from scratch)"
    "${BH[@]}" add "$c" "$WORK/rootfs.tar" /
    "${BH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
    timeout 600 "${BH[@]}" run --isolation=chroot "$c" -- sh -c 'apt-get update -qq \
        && apt-get install -y -qq --no-install-recommends python3-pip python3-venv ca-certificates >/dev/null \
        && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED \
        && ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip'
    "${BH[@]}" copy "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
    "${BH[@]}" commit -q "$c" "$STANDIN" >/dev/null && "${BH[@]}" rm "$c" >/dev/null
fi

start=$(date +%s)
timeout 1200 "${BH[@]}" bud --isolation=chroot --pull=never --layers --skip-unused-stages=false \
    --format docker --build-arg PYTHON_IMAGE="$STANDIN" --build-arg CUDA_IMAGE="$STANDIN" \
    -t "$IMAGE" "$ROOT"
log "built $IMAGE in $(( $(date +%s) - start )) s"
"${BH[@]}" images "$IMAGE"

"$PY" - "$WORK/models" "$ROOT" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.fakes import write_model_version
write_model_version(Path(sys.argv[1]), "tiny", 1)
PY
ctr="$("${BH[@]}" from --pull=never "$IMAGE")"
"${BH[@]}" copy "$ctr" "$WORK/models" /models
run() { "${BH[@]}" run --isolation=chroot "$ctr" -- "$@"; }

if run python -c "import torch" 2>/dev/null; then log "FAIL: torch is importable"; exit 1; fi
run python -m pip list --disable-pip-version-check 2>/dev/null

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${BH[@]}" run --isolation=chroot --env HOTSERVE_HOST=127.0.0.1 --env "HOTSERVE_PORT=$port" "$ctr" \
    -- hotserve serve >"$WORK/serve.log" 2>&1 &
bh_pid=$!
for _ in $(seq 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/v2/health/ready")" = 200 ] && break
    kill -0 "$bh_pid" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
    sleep 0.5
done
# buildah run kills (not TERMs) its child on SIGTERM: find the server below it to test the drain.
descendants() { local p; for p in $(pgrep -P "$1"); do echo "$p"; descendants "$p"; done; }
for p in $(descendants "$bh_pid"); do
    [[ "$(tr '\0' ' ' < "/proc/$p/cmdline")" == /opt/venv/bin/python* ]] && server_pid=$p
done
uid="$(awk '/^Uid:/{print $2}' "/proc/$server_pid/status")"
body="$(curl -s -w ' HTTP %{http_code}' -H 'Content-Type: application/json' \
    -d '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}' \
    "127.0.0.1:$port/v2/models/tiny/infer")"
log "infer: $body"
log "server pid $server_pid runs as uid $uid"
kill -TERM "$server_pid"; server_pid=""
wait "$bh_pid" && rc=0 || rc=$?
bh_pid=""
[[ "$body" == *'"outputs"'*'HTTP 200' && "$uid" = 10001 && "$rc" = 0 ]] \
    || { log "FAIL (uid=$uid, exit=$rc)"; cat "$WORK/serve.log"; exit 1; }
log "OK: built, ready, inferred as uid 10001, no torch, drained on SIGTERM (exit 0)"

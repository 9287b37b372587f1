#!/bin/sh
# Installs the hotserve server (base dependencies only, never torch) into a virtualenv.
#
# The Dockerfile's build stage runs exactly this script, and tests/deploy runs it into a
# fresh venv, so what the image installs is what the test starts.
#
# usage: install.sh VENV_DIR SOURCE_DIR [cpu|gpu] [all|deps|project]
#   cpu: the `onnxruntime` wheel; gpu: `onnxruntime-gpu` in its place. Both provide the
#   `onnxruntime` module, so only one of them may ever be installed.
#   deps: third-party dependencies only, at the versions uv.lock pins (needs just
#   requirements/, so the image build can cache that layer until the lock changes);
#   project: hotserve itself; all: both.
set -eu

if [ "$#" -lt 2 ] || [ "$#" -gt 4 ]; then
    echo "usage: $0 VENV_DIR SOURCE_DIR [cpu|gpu] [all|deps|project]" >&2
    exit 2
fi
venv="$1"
src="$2"
variant="${3:-cpu}"
phase="${4:-all}"
case "$phase" in
    all|deps|project) ;;
    *) echo "$0: phase must be all, deps or project, got '$phase'" >&2; exit 2 ;;
esac
case "$variant" in
    cpu) runtime_pkg="onnxruntime"; other_pkg="onnxruntime-gpu" ;;
    gpu) runtime_pkg="onnxruntime-gpu"; other_pkg="onnxruntime" ;;
    *) echo "$0: variant must be cpu or gpu, got '$variant'" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip --no-cache-dir --disable-pip-version-check"

install_deps() {
    # The lock's pins for the variant: requirements/server-<variant>.txt, exported from uv.lock
    # by scripts/lock.sh (gpu: onnxruntime-gpu in onnxruntime's place), each file checked
    # against its hash.
    $pip install -q --require-hashes -r "$src/requirements/server-$variant.txt"
}

if [ "$phase" != project ]; then
    install_deps
fi

if [ "$phase" != deps ]; then
    # The project itself; its dependencies are installed above (with the variant's
    # onnxruntime, which pip would otherwise replace with the CPU wheel).
    $pip install -q --no-deps "$src"
fi

if $pip show -q "$other_pkg" >/dev/null 2>&1; then
    echo "$0: both $runtime_pkg and $other_pkg are installed in $venv" >&2
    exit 1
fi
if [ "$phase" = deps ]; then
    "$venv/bin/python" -c "import onnxruntime; print('dependencies installed with onnxruntime', onnxruntime.__version__)"
else
    # Building the parser imports every subcommand module: proves none needs torch.
    "$venv/bin/python" -c "import onnxruntime, server.cli; server.cli.build_parser(); print('hotserve installed with onnxruntime', onnxruntime.__version__)"
fi

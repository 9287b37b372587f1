#!/usr/bin/env bash
# The GPU check (a few minutes): hotserve's CUDA path through the real server and batcher at 1 and
# 64 clients, a sweep of rows per request, and two epochs of `hotserve train --device cuda --amp`,
# written to one JSON report. Without an NVIDIA GPU it says so and exits 0.
#   bash scripts/gpu-check.sh [REPORT.json] [extra flags of python -m load_tests.gpu_check]
# Needs on the GPU machine: onnxruntime-gpu (not onnxruntime) and a CUDA build of torch in the
# environment it runs in (HOTSERVE_VENV, default ./.venv), and wrk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${HOTSERVE_VENV:-$PWD/.venv}"
report="${1:-gpu-report.json}"
shift || true
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi missing or failing); nothing to measure"
fi
if [ ! -x "$venv/bin/python" ]; then
  bash scripts/setup-env.sh "train,load"
fi
command -v wrk >/dev/null 2>&1 || { apt-get install -y -qq wrk >/dev/null 2>&1 || true; }
export PATH="$venv/bin:$PATH"
exec timeout 300 "$venv/bin/python" -m load_tests.gpu_check --out "$report" --duration 5 "$@"

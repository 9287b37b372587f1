#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs hotserve into it with the given extras.
# Usage: scripts/setup-env.sh "train,dev"      (run by run.sh and test.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-train}"

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu ship venv separately.
    echo "python3 -m venv failed; installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv && python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip
fi
# PyPI's Linux torch wheels depend on gigabytes of CUDA libraries; PyTorch's CPU index has the
# same release (`2.13.0+cpu` satisfies the extra's `torch==2.13.0`, and pip prefers it). Only
# asked while torch is missing, so later runs need no index beyond the usual ones.
torch_index=()
if [[ ",$extras," == *",train,"* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  torch_index=(--extra-index-url "${HOTSERVE_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}")
fi
.venv/bin/python -m pip install -q "${torch_index[@]}" -e ".[${extras}]"

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
# torch is pinned (==2.13.0) in the `train` extra: this project's machines carry that release's CPU
# wheel, and pip takes it; an unpinned torch would download gigabytes of CUDA.
.venv/bin/python -m pip install -q -e ".[${extras}]"

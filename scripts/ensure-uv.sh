#!/usr/bin/env bash
# Prints the path of uv (pinned here, its one place), installing it into ./.venv first when it is
# missing or another release: scripts/setup-env.sh installs the project from uv.lock with it, the
# side environments (Feast, MLflow server) from their locks in requirements/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION=0.13.8

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu ship venv separately.
    echo "python3 -m venv failed; installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv && python3 -m venv .venv
  fi
fi
if [[ "$(.venv/bin/uv --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" >&2
fi
echo "$PWD/.venv/bin/uv"

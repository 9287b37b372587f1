#!/usr/bin/env bash
# Creates ./.venv-feast with Feast pinned, for the Feast integration test and benchmark only: the
# server never installs Feast (it reads Feast's Redis layout itself). Reused while the pin matches.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FEAST_VERSION=0.67.0
if [ -x .venv-feast/bin/python ] &&
  .venv-feast/bin/python -c "import sys, feast; sys.exit(feast.__version__ != '${FEAST_VERSION}')" 2>/dev/null; then
  exit 0
fi
rm -rf .venv-feast
python3 -m venv .venv-feast
.venv-feast/bin/python -m pip install -q --disable-pip-version-check "feast[redis]==${FEAST_VERSION}"

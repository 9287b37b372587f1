#!/usr/bin/env bash
# Makes ./.venv-feast exactly requirements/feast.txt (Feast pinned, every file hashed; scripts/lock.sh
# compiles it from requirements/feast.in), for the Feast integration test and benchmark only: the
# server never installs Feast (it reads Feast's Redis layout itself). A second run only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv="$(bash scripts/ensure-uv.sh)"
venv=.venv-feast
[ -x "$venv/bin/python" ] || "$uv" venv -q --python python3 "$venv"
"$uv" pip sync -q --compile-bytecode --python "$venv/bin/python" --require-hashes requirements/feast.txt

#!/usr/bin/env bash
# Makes ./.venv-mlflow exactly requirements/mlflow-server.txt: a real MLflow tracking server for
# tests/mlflow, kept out of the project's venv (the full `mlflow` package pins its own pyarrow,
# SQLAlchemy, Flask...). The client side is the `mlflow` extra (mlflow-skinny, same release) in
# ./.venv. scripts/lock.sh compiles the file, hashed, from requirements/mlflow-server.in.
# A second run only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv="$(bash scripts/ensure-uv.sh)"
venv="${HOTSERVE_MLFLOW_VENV:-$PWD/.venv-mlflow}"
[ -x "$venv/bin/python" ] || "$uv" venv -q --python python3 "$venv"
"$uv" pip sync -q --compile-bytecode --python "$venv/bin/python" --require-hashes requirements/mlflow-server.txt

#!/usr/bin/env bash
# Creates ./.venv-mlflow (if missing): a real MLflow tracking server for tests/mlflow, kept out of the
# project's venv (the full `mlflow` package pins its own pyarrow, SQLAlchemy, Flask...). The client side
# is the `mlflow` extra (mlflow-skinny, same release) in ./.venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MLFLOW_VERSION="3.17.2"
venv="${HOTSERVE_MLFLOW_VENV:-$PWD/.venv-mlflow}"
if [ -x "$venv/bin/mlflow" ] && "$venv/bin/python" -c "import mlflow, sys; sys.exit(mlflow.__version__ != '$MLFLOW_VERSION')" 2>/dev/null; then
  exit 0
fi
echo "mlflow-server-env: installing mlflow==$MLFLOW_VERSION into $venv"
python3 -m venv "$venv"
log="$(mktemp)"
if ! { "$venv/bin/python" -m pip install -q --upgrade pip && "$venv/bin/python" -m pip install -q "mlflow==$MLFLOW_VERSION"; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
rm -f "$log"

#!/usr/bin/env bash
# The whole test suite, set up from scratch on a fresh Debian/Ubuntu machine (run as root there:
# it may apt-get install redis-server and the deploy validation tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Every install comes from a lock: uv.lock for .venv, requirements/*.txt for the side environments
# (scripts/upgrade-lock.sh runs this script on the newest releases instead).
# `load` too: mypy checks load_tests/ against locust's own annotations; `mlflow`: tests/mlflow (with a
# real tracking server from .venv-mlflow).
bash scripts/setup-env.sh "train,dev,load,mlflow"
bash scripts/mlflow-server-env.sh
bash scripts/ensure-redis.sh
bash scripts/ci-tools.sh
# Feast (pinned) in a venv of its own: tests/integration/test_feast_store.py runs its materialize.
bash scripts/setup-feast-env.sh
export HOTSERVE_REQUIRE_FEAST=1
export PATH="$PWD/.venv/bin:$PWD/.tools/bin:$PATH"
export HOTSERVE_TEST_REDIS_URL="${HOTSERVE_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
echo "== ruff (pyflakes, import order, pyupgrade, pycodestyle)"
.venv/bin/ruff check .
echo "== ruff format --check"
.venv/bin/ruff format --check .
echo "== mypy --strict (server, training, exporters, demos, load_tests)"
.venv/bin/mypy
echo "== pytest"
# Two workers, each taking whole files (module fixtures are shared within a file): about 35% less
# wall time than one on a 2-core machine. HOTSERVE_TEST_WORKERS=0 runs it in one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${HOTSERVE_TEST_WORKERS:-2}" --dist loadfile "$@"

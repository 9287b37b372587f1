#!/usr/bin/env bash
# From a fresh clone, one command: the environment (train + load extras), then a bounded release
# rehearsal under load against the demo model (trained and exported if missing): mixed locust
# traffic, an operator canarying, shadowing, promoting and rolling back a version, the report,
# plots and the SLO gate (load_tests/slo/fraud.yaml). Arguments go to `python -m load_tests run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh "train,load"
exec .venv/bin/python -m load_tests run "$@"

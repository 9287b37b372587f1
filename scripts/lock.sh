#!/usr/bin/env bash
# Remakes uv.lock from pyproject.toml and the files made from it or beside it:
#   requirements/server-cpu.txt, server-gpu.txt  the image's installs (docker/install.sh), hashed
#   requirements/feast.txt, mlflow-server.txt     the side environments, hashed, from their .in
# Usage: bash scripts/lock.sh             after a change to pyproject.toml or requirements/*.in:
#                                         keeps every pin that still fits, adds what is new
#        bash scripts/lock.sh --upgrade   every pin to the newest release the ranges allow
#                                         (scripts/upgrade-lock.sh does this, then runs the suite)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
upgrade=()
case "${1:-}" in
  --upgrade) upgrade=(--upgrade) ;;
  "") ;;
  *) echo "usage: $0 [--upgrade]" >&2; exit 2 ;;
esac
uv="$(bash scripts/ensure-uv.sh)"
compile=("$uv" pip compile -q --universal --python-version 3.11 --generate-hashes
  --custom-compile-command "bash scripts/lock.sh" "${upgrade[@]}")

"$uv" lock -q "${upgrade[@]}"
# The server's base dependencies (no extra, no group, not hotserve itself), for pip --require-hashes.
"$uv" export -q --frozen --no-dev --no-emit-project --output-file requirements/server-cpu.txt
# GPU: the same pins, with onnxruntime-gpu (pyproject.toml's onnxruntime range; its releases lag
# onnxruntime's) in place of onnxruntime.
"$uv" export -q --frozen --no-dev --no-emit-project --no-hashes --no-annotate --no-header \
  | .venv/bin/python -c '
import re, sys, tomllib
with open("pyproject.toml", "rb") as fh:
    deps = tomllib.load(fh)["project"]["dependencies"]
(spec,) = [d[len("onnxruntime"):] for d in deps if re.match(r"onnxruntime\b(?!-)", d)]
for line in sys.stdin:
    print("onnxruntime-gpu" + spec if line.startswith("onnxruntime==") else line.rstrip("\n"))
' \
  | "${compile[@]}" --no-annotate - --output-file requirements/server-gpu.txt
for side in feast mlflow-server; do
  "${compile[@]}" "requirements/$side.in" --output-file "requirements/$side.txt"
done

#!/usr/bin/env bash
# Remake the checked-in gRPC stubs from server/protocol/proto/inference.proto with the `dev` extra's
# grpcio-tools (pinned in pyproject.toml: its protoc decides the gencode's protobuf version, which is
# the oldest protobuf runtime the stubs run on). tests/unit/test_grpc_status.py fails when they are
# out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
"$python" - <<'PY'
import importlib.metadata
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as fh:
    dev = tomllib.load(fh)["project"]["optional-dependencies"]["dev"]
(pin,) = [m.group(1) for dep in dev if (m := re.fullmatch(r"grpcio-tools==(\S+)", dep))]
have = importlib.metadata.version("grpcio-tools")
if have != pin:
    sys.exit(f"grpcio-tools {have} is installed, pyproject.toml pins {pin}: run scripts/setup-env.sh dev")
PY
"$python" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. \
    server/protocol/proto/inference.proto

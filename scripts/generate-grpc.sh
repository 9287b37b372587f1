#!/usr/bin/env bash
# Remake the checked-in gRPC stubs from server/protocol/proto/inference.proto (needs the `dev`
# extra's grpcio-tools). tests/unit/test_grpc_status.py fails when they are out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
"$python" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. \
    server/protocol/proto/inference.proto

#!/usr/bin/env bash
# The main job: set up, train + export the demo model if the repository is empty, serve it.
# Embedded defaults: no Redis needed. Override with HOTSERVE_* environment variables.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-env.sh train
export PATH="$PWD/.venv/bin:$PATH"
if [ -t 2 ]; then
  export HOTSERVE_LOG_FORMAT="${HOTSERVE_LOG_FORMAT:-text}"  # readable lines in a terminal; JSON otherwise
fi

repo="${HOTSERVE_MODEL_REPOSITORY:-model_repository}"
checkpoints="${HOTSERVE_CHECKPOINTS:-checkpoints}"
if [ -z "$(ls -A "$repo" 2>/dev/null)" ]; then
  echo "== model repository '$repo' is empty: training and exporting the demo model"
  hotserve train --name fraud --arch mlp --dataset demo:fraud --checkpoints "$checkpoints"
  hotserve export "$checkpoints/fraud" --repository "$repo"
fi
if [ -z "${HOTSERVE_REDIS_URL:-}" ]; then
  # Embedded feature store: load the demo customers' features at start-up, so v1 requests need
  # only customer_id and the transaction's own features.
  export HOTSERVE_FEATURE_TABLE="${HOTSERVE_FEATURE_TABLE:-demo:fraud}"
fi
# The Open Inference Protocol over gRPC beside REST (tritonclient.grpc and other gRPC clients);
# HOTSERVE_GRPC_PORT= (empty) turns it off.
export HOTSERVE_GRPC_PORT="${HOTSERVE_GRPC_PORT-8081}"
echo "== serving '$repo' on http://${HOTSERVE_HOST:-127.0.0.1}:${HOTSERVE_PORT:-8080}${HOTSERVE_GRPC_PORT:+ and gRPC :$HOTSERVE_GRPC_PORT}"
# Capture what is served (docs/capture.md): Parquet under capture/, what labels join to and
# `hotserve retrain` trains on. HOTSERVE_CAPTURE_SINK= (empty) turns it off; s3://bucket/prefix for a fleet.
export HOTSERVE_CAPTURE_SINK="${HOTSERVE_CAPTURE_SINK-capture}"
if [ -n "$HOTSERVE_CAPTURE_SINK" ]; then echo "== capturing answered requests to $HOTSERVE_CAPTURE_SINK"; fi
# glibc gives an unloaded model version's memory back to the OS (server/registry/memory.py).
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-131072}"
exec hotserve serve --model-repository "$repo"

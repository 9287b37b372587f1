# hotserve server image. CPU by default; `--build-arg VARIANT=gpu` builds on a CUDA runtime
# with onnxruntime-gpu instead of onnxruntime. Only the server's base dependencies are
# installed (no torch, no `train` extra), from the lock, by docker/install.sh, which tests/deploy
# runs too.
#
#   docker build -t hotserve:cpu .
#   docker build --build-arg VARIANT=gpu -t hotserve:gpu .
#   docker run -p 8080:8080 -p 8081:8081 -v $PWD/model_repository:/models:ro hotserve:cpu

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.2x+ wheels link CUDA 13 and cuDNN 9.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

# ---- bases: identical in the build and runtime stages, so the venv's interpreter path holds
FROM ${PYTHON_IMAGE} AS base-cpu
ENV HOTSERVE_EXECUTION_PROVIDERS=CPUExecutionProvider

FROM ${CUDA_IMAGE} AS base-gpu
# Unpinned on purpose: Ubuntu drops superseded versions from its archive, so pins break builds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV HOTSERVE_EXECUTION_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider

# ---- build: a self-contained venv in /opt/venv
# (DL3006 reads the stage name base-${VARIANT} as an untagged image.)
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ARG VARIANT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY docker/install.sh /usr/local/bin/hotserve-install
# Dependencies first, at the versions uv.lock pins (exported with their hashes by scripts/lock.sh):
# this layer is reused until the lock changes.
COPY requirements/server-cpu.txt requirements/server-gpu.txt ./requirements/
RUN hotserve-install /opt/venv /src "${VARIANT}" deps
COPY pyproject.toml README.md ./
COPY server ./server
COPY training ./training
COPY exporters ./exporters
COPY demos ./demos
RUN hotserve-install /opt/venv /src "${VARIANT}" project

# ---- runtime
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="hotserve" \
      org.opencontainers.image.description="Low-latency ONNX model server (KServe v2 protocol, dynamic batching)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.hotserve.variant="${VARIANT}"
RUN groupadd --system --gid 10001 hotserve \
 && useradd --system --uid 10001 --gid hotserve --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hotserve \
 && mkdir -p /models \
 && chmod 0755 /models
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/hotserve/healthcheck.py
# MALLOC_TRIM_THRESHOLD_: glibc gives an unloaded model version's memory back to the OS
# (measured: 20 load/unload cycles +0.7% RSS instead of +32%; server/registry/memory.py).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_TRIM_THRESHOLD_=131072 \
    HOTSERVE_MODEL_REPOSITORY=/models \
    HOTSERVE_HOST=0.0.0.0 \
    HOTSERVE_PORT=8080 \
    HOTSERVE_GRPC_PORT=8081
VOLUME ["/models"]
WORKDIR /tmp
USER 10001:10001
# HTTP (REST) and gRPC, both the Open Inference Protocol; `-e HOTSERVE_GRPC_PORT=` turns gRPC off.
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "/opt/hotserve/healthcheck.py"]
# The server drains queued batches on SIGTERM (HOTSERVE_SHUTDOWN_GRACE_S) before exiting.
STOPSIGNAL SIGTERM
CMD ["hotserve", "serve"]

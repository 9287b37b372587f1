"""Label intake throughput of one replica: labels taken per second over `POST /v2/models/{name}/labels`.

Starts `hotserve serve` over a one-model repository (a binary model with a prediction contract),
fills its served index with `--rows` answered rows the way capture's writer does (`put_many`:
Redis with `--redis-url`, else the embedded SQLite file the server opens), then sends JSON-lines
batches of `--batch` labels from `--clients` concurrent clients for `--duration-s` and reports
labels/s taken (every label looked up, stored as a pair and queued for the label files; the
repeated batches are duplicates, taken the same way).

    .venv/bin/python -m load_tests.labels_benchmark --duration-s 20 [--redis-url redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import onnx
import redis
from onnx import TensorProto, helper, numpy_helper

from load_tests.server_process import start_server
from server.capture.record import CaptureRecord
from server.contract.manifest import (
    ONNX_FILENAME,
    Lineage,
    ModelManifest,
    PredictionContract,
    TensorSpec,
    sha256_file,
)
from server.labels.served_index import RedisServedIndex, SqliteServedIndex

MODEL = "graded"


def _repository(root: Path) -> Path:
    """A model.json is all the labels path reads; the graph is a one-layer scorer of 4 features."""
    weights = np.random.default_rng(7).normal(size=(4, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["score"])],
        MODEL,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = root / MODEL / "1"
    folder.mkdir(parents=True)
    onnx.save(model, folder / ONNX_FILENAME)
    ModelManifest(
        name=MODEL,
        version=1,
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="score", datatype="FP32", shape=[-1, 1])],
        prediction=PredictionContract(task="binary", output="score"),
        lineage=Lineage(architecture="logistic"),
        onnx_sha256=sha256_file(folder / ONNX_FILENAME),
    ).write(folder)
    return root


def _fill(index: RedisServedIndex | SqliteServedIndex, rows: int) -> None:
    now = datetime.now(UTC)
    for start in range(0, rows, 10_000):
        index.put_many(
            [
                CaptureRecord(f"r{i}", 0, now, MODEL, 1, "v2", {"features": [0.0] * 4}, {"score": (i % 100) / 100})
                for i in range(start, min(rows, start + 10_000))
            ]
        )


async def _client(url: str, token: str, bodies: list[bytes], until: float, taken: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        i = 0
        while time.monotonic() < until:
            answer = await client.post(f"/v2/models/{MODEL}/labels", content=bodies[i % len(bodies)], headers=headers)
            answer.raise_for_status()
            doc = answer.json()
            taken.append(doc["received"] - doc["unknown"])
            i += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--redis-url", default="", help="empty: the embedded SQLite served index")
    args = parser.parse_args()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repository = _repository(root / "repository")
        env = {
            "HOTSERVE_ADMIN_TOKEN": token,
            "HOTSERVE_CAPTURE_SINK": str(root / "capture"),
            "HOTSERVE_QUALITY_MAX_PAIRS": str(args.rows),  # every label stored, none dropped as over the bound
        }
        prefix = f"labels-bench-{os.getpid()}"
        if args.redis_url:
            env |= {"HOTSERVE_REDIS_URL": args.redis_url, "HOTSERVE_CONTROL_KEY_PREFIX": prefix}
            client = redis.Redis.from_url(args.redis_url)
            index: RedisServedIndex | SqliteServedIndex = RedisServedIndex(client, prefix, 3600.0)
        else:
            index = SqliteServedIndex(root / "capture" / "_hotserve" / "labels.sqlite3", 3600.0)
        _fill(index, args.rows)
        index.close()
        server = start_server(repository, root / "server.log", env=env)
        try:
            bodies = [
                b"\n".join(
                    b'{"request_id": "r%d", "label": %d}' % (i, i % 2)
                    for i in range(start, min(args.rows, start + args.batch))
                )
                for start in range(0, args.rows, args.batch)
            ]
            taken: list[int] = []
            started = time.monotonic()
            until = started + args.duration_s

            async def run() -> None:
                await asyncio.gather(
                    *(_client(server.base_url, token, bodies, until, taken) for _ in range(args.clients))
                )

            asyncio.run(run())
            elapsed = time.monotonic() - started
        finally:
            server.stop()
        if args.redis_url:
            client = redis.Redis.from_url(args.redis_url)
            for key in client.scan_iter(f"{prefix}:*", count=10_000):
                client.delete(key)
    store = "redis" if args.redis_url else "sqlite"
    print(
        f"labels taken: {sum(taken)} in {elapsed:.1f} s = {sum(taken) / elapsed:,.0f} labels/s "
        f"({store}, batches of {args.batch}, {args.clients} clients, {len(taken)} requests)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The two reference servers the stack benchmark measures hotserve against, on the same stack
(uvicorn + httptools + uvloop, one process):

* `bare`: the limit of the stack itself. A plain ASGI app that reads the whole request body and
  answers a fixed v2 response: no decoding, no model. What is left between it and hotserve is
  what hotserve does per request.
* `plain`: the server a user writes in an afternoon. A FastAPI route that parses the v2 JSON
  body, runs the model's onnxruntime session on the event loop and returns the v2 answer as a
  dict (FastAPI's own encoding). No batching, no metrics, no validation beyond what breaks.

    HOTSERVE_STACK_MODEL=repo/fraud/1 HOTSERVE_PORT=8001 python -m load_tests.stack_apps plain

Host and port come from `HOTSERVE_HOST` and `HOTSERVE_PORT`, as for `hotserve serve`, so the
benchmark starts all three with the same launcher (`load_tests/server_process.py`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

MODEL_ENV = "HOTSERVE_STACK_MODEL"
"""A version directory (`model.onnx` and `model.json`), the model the reference servers answer for."""

_FIXED_ANSWER = json.dumps(
    {
        "model_name": "fraud",
        "model_version": "1",
        "outputs": [{"name": "probability", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}],
    }
).encode()


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the body, answer a fixed v2 response (any other scope: lifespan, answered at once)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_FIXED_ANSWER)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": _FIXED_ANSWER})


def _plain_app() -> FastAPI:
    version_dir = Path(os.environ.get(MODEL_ENV, "."))
    app = FastAPI()
    if not (version_dir / "model.onnx").is_file():
        return app  # imported without a model (a type check, a test of `bare`): no route
    manifest = json.loads((version_dir / "model.json").read_text())
    name = str(manifest["name"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(version_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])

    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request) -> dict[str, Any]:
        body = await request.json()
        feeds = {
            tensor["name"]: np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            for tensor in body["inputs"]
        }
        outputs = session.run(None, feeds)
        return {
            "model_name": name,
            "outputs": [
                {"name": meta.name, "datatype": "FP32", "shape": list(value.shape), "data": value.ravel().tolist()}
                for meta, value in zip(session.get_outputs(), outputs, strict=True)
            ],
        }

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


plain = _plain_app()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("bare", "plain"):
        print("usage: python -m load_tests.stack_apps bare|plain", file=sys.stderr)
        return 2
    uvicorn.run(
        f"load_tests.stack_apps:{argv[0]}",
        host=os.environ.get("HOTSERVE_HOST", "127.0.0.1"),
        port=int(os.environ.get("HOTSERVE_PORT", "8000")),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The two reference servers the stack benchmark measures hotserve against, on the same stack
(uvicorn + httptools + uvloop, one process), and the same apps on Granian:

* `bare`: the limit of the stack itself. A plain ASGI app that reads the whole request body and
  answers a fixed v2 response: no decoding, no model. What is left between it and hotserve is
  what hotserve does per request.
* `plain`: the server a user writes in an afternoon. A FastAPI route that parses the v2 JSON
  body, runs the model's onnxruntime session on the event loop and returns the v2 answer as a
  dict (FastAPI's own encoding). No batching, no metrics, no validation beyond what breaks.

    HOTSERVE_STACK_MODEL=repo/fraud/1 HOTSERVE_PORT=8001 python -m load_tests.stack_apps plain

`--server granian` runs the app on Granian (Rust, hyper; its embedded server in this process's
uvloop, HTTP/1 only, one Rust runtime thread) instead of uvicorn: `bare`, `plain`, and
`hotserve`, hotserve's own app built from its settings as `hotserve serve` builds it (env
`HOTSERVE_*`), with the collector frozen after startup and its drain on SIGTERM (readiness false
and new inference 503 at once, accepted requests answered within `shutdown_grace_s`, then Granian
stops and the lifespan closes; a second signal stops at once). What it does not have is
`hotserve serve`'s one-write protocol class (`server/api/http_protocol.py` is uvicorn's): the
inference lane sends its two ASGI messages, and Granian writes the answer.

    HOTSERVE_MODEL_REPOSITORY=repo python -m load_tests.stack_apps hotserve --server granian

Host and port come from `HOTSERVE_HOST` and `HOTSERVE_PORT`, as for `hotserve serve`, so the
benchmark starts them all with the same launcher (`load_tests/server_process.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

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


def hotserve_app() -> tuple[FastAPI, float, bool]:
    """hotserve's app as `hotserve serve` builds it (settings from `HOTSERVE_*`, its logging, the
    allocator tuned), with the collector frozen once its lifespan has started (what
    `DrainingServer.startup` does on uvicorn); its shutdown grace and whether to log access."""
    from server.app import create_app
    from server.logs import configure_logging
    from server.registry.memory import tune_allocator
    from server.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    tune_allocator()
    app = create_app(settings)
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def frozen_after_startup(app_: Any) -> AsyncIterator[Any]:
        async with started(app_) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = frozen_after_startup
    return app, settings.shutdown_grace_s, settings.access_log


async def _drain_hotserve(app: FastAPI, grace_s: float, stop: Callable[[], None]) -> None:
    """`DrainingServer`'s drain: readiness false and new inference 503 at once, then wait (within
    the grace) for every accepted request to answer before the server stops."""
    edge = getattr(app.state, "edge", None)
    if edge is not None:
        edge.inflight.begin_drain(grace_s)
        logger.info("SIGTERM: draining %d in-flight requests (grace %.1f s)", edge.inflight.count, grace_s)
        if not await edge.inflight.wait_idle(edge.inflight.grace_left(grace_s)):
            logger.warning("grace period over with %d requests still in flight", edge.inflight.count)
    stop()


def run_granian(
    app: ASGIApp, host: str, port: int, drain: Callable[[Callable[[], None]], Any] | None, access_log: bool = False
) -> None:
    """Serve `app` on Granian's embedded server in this process (uvloop), HTTP/1; with
    `access_log`, Granian's own line per request through the `granian.access` logger.

    SIGTERM/SIGINT: with `drain`, the coroutine it makes runs first and stops the server when it
    is done; a second signal stops it at once."""
    import uvloop
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    async def serve() -> None:
        server = Server(
            app,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            http=HTTPModes.http1,
            websockets=False,
            log_level=LogLevels.warning,
            log_access=access_log,
            log_dictconfig={"version": 1, "disable_existing_loggers": False, "loggers": {}},
        )
        stop = cast(Callable[[], None], server.stop)  # granian's own methods carry no annotations
        loop = asyncio.get_running_loop()
        draining: list[asyncio.Task[Any]] = []

        def on_signal() -> None:
            if drain is None or draining:
                stop()
                return
            draining.append(loop.create_task(drain(stop)))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await server.serve()

    uvloop.run(serve())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.stack_apps")
    parser.add_argument("app", choices=("bare", "plain", "hotserve"))
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    args = parser.parse_args(argv)
    host, port = os.environ.get("HOTSERVE_HOST", "127.0.0.1"), int(os.environ.get("HOTSERVE_PORT", "8000"))
    if args.app == "hotserve":
        if args.server == "uvicorn":
            parser.error("hotserve on uvicorn is `hotserve serve`")
        app, grace_s, access_log = hotserve_app()
        run_granian(app, host, port, lambda stop: _drain_hotserve(app, grace_s, stop), access_log)
        return 0
    if args.server == "granian":
        run_granian(bare if args.app == "bare" else plain, host, port, None)
        return 0
    uvicorn.run(
        f"load_tests.stack_apps:{args.app}",
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

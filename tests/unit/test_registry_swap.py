"""Swapping the serving version: leases keep a routed request on its version through the swap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from server.app import create_app
from server.metrics.instruments import Metrics
from server.registry.control_store import open_control_state
from server.registry.registry import ModelRegistry, VersionState
from server.settings import Settings
from tests.fakes import tiny_mlp_reference, until, write_model_version

HANG_GUARD_S = 30


def settings_for(repository: Path) -> Settings:
    return Settings(
        model_repository=repository, execution_providers="CPUExecutionProvider", intra_op_threads=1, inter_op_threads=1
    )


def v2_body(x: np.ndarray) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    )


class SlowBody:
    """An ASGI `receive` that sends the first half of a body, then the rest once `rest` is set."""

    def __init__(self, body: bytes) -> None:
        self.parts = [body[: len(body) // 2], body[len(body) // 2 :]]
        self.first_sent = asyncio.Event()
        self.rest = asyncio.Event()

    async def __call__(self) -> dict[str, Any]:
        if not self.first_sent.is_set():
            self.first_sent.set()
            return {"type": "http.request", "body": self.parts[0], "more_body": True}
        await self.rest.wait()
        return {"type": "http.request", "body": self.parts[1], "more_body": False}


async def test_request_routed_before_a_swap_is_answered_by_its_version_while_its_body_arrives(tmp_path: Path) -> None:
    weights = {v: write_model_version(tmp_path, "mlp", v) for v in (1, 2)}
    settings, metrics = settings_for(tmp_path), Metrics()
    registry = ModelRegistry(settings, metrics, open_control_state(settings, metrics))
    app = create_app(settings_for(tmp_path), registry=registry, metrics=Metrics())
    x = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    body = v2_body(x)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app):
        snapshot = await registry.control.read()
        # v2 loaded beside v1 (as canary) so the promotion below is a pure routing change.
        await registry.apply(snapshot.with_alias("mlp", "production", 1).with_alias("mlp", "canary", 2))
        old = registry.resolve("mlp")
        assert old.version == 1
        receive = SlowBody(body)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v2/models/mlp/infer",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "query_string": b"",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
        }
        in_flight = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.wait_for(receive.first_sent.wait(), HANG_GUARD_S)
        assert old.leases == 1  # routed and leased before its body is complete

        # Promote v2 while v1's request is still arriving: the new table routes to v2 at once...
        swap = asyncio.ensure_future(registry.apply(registry.applied.with_alias("mlp", "production", 2)))
        await until(lambda: registry.resolve("mlp").version == 2)
        # ...while v1 waits for its lease before it unloads.
        assert not swap.done() and old.leases == 1 and not old.batcher.closing

        receive.rest.set()
        await asyncio.wait_for(in_flight, HANG_GUARD_S)
        await asyncio.wait_for(swap, HANG_GUARD_S)

    start, response = sent[0], sent[1]
    assert start["status"] == 200, response
    doc = orjson.loads(response["body"])
    assert doc["model_version"] == "1"
    np.testing.assert_allclose(doc["outputs"][0]["data"], tiny_mlp_reference(x, *weights[1]).ravel(), rtol=1e-5)
    assert old.leases == 0 and old.batcher.closing
    assert [(s.version, s.state) for s in registry.statuses()] == [
        (1, VersionState.UNLOADED),
        (2, VersionState.UNLOADED),
    ]  # closed with the app

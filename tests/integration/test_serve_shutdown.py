"""A corrupt model does not stop the good one; SIGTERM drains accepted requests and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import orjson
import pytest

from gated_serve import GatedServer

pytestmark = pytest.mark.integration

BODY = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [7.0]}]})


async def test_corrupt_model_fails_alone_and_the_good_one_serves(draining: GatedServer) -> None:
    async with httpx.AsyncClient(base_url=draining.server.base_url, timeout=30) as client:
        assert (await client.get("/v2/health/ready")).status_code == 503
        broken = await client.post("/v2/models/broken/infer", content=BODY)
        assert broken.status_code == 503
        assert broken.json() == {"error": "model 'broken' has no ready version"}
        assert (await client.get("/v2/models/broken/ready")).status_code == 503
        served = await client.post("/v2/models/gated/infer", content=BODY)
        assert served.status_code == 200 and served.json()["outputs"][0]["data"] == [7.0]
        metrics = (await client.get("/metrics")).text
    assert 'hotserve_model_loads_total{model="broken",result="failure"} 1.0' in metrics
    assert 'hotserve_model_loads_total{model="gated",result="success"} 1.0' in metrics
    assert "sha256" in draining.server.log()


async def test_sigterm_finishes_accepted_requests_refuses_new_ones_and_exits_0(draining: GatedServer) -> None:
    server, gate = draining
    accepted = 4
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client, gate.held(), asyncio.timeout(60):
        held = [asyncio.create_task(client.post("/v2/models/gated/infer", content=BODY)) for _ in range(accepted)]
        await gate.wait_entered(1)  # one running (max_batch_size 1, one instance) ...
        while await _inflight(client) < accepted:  # ... and, once all four are admitted, three queued
            pass
        server.process.send_signal(signal.SIGTERM)
        while (await client.get("/v2/health/ready")).json() != {"ready": False} or not await _refuses(client):
            pass
        refused = await client.post("/v2/models/gated/infer", content=BODY)
        await gate.open()
        responses = await asyncio.gather(*held)
    assert (refused.status_code, refused.json()) == (503, {"error": "server is shutting down"})
    assert [r.status_code for r in responses] == [200] * accepted
    assert all(r.json()["outputs"][0]["data"] == [7.0] for r in responses)
    # Answers from the drain on close their connection (those under way at SIGTERM too): a
    # keep-alive client sends its next request elsewhere, not onto a connection about to close.
    assert [r.headers.get("connection") for r in [refused, *responses]] == ["close"] * (accepted + 1)
    assert server.process.wait(timeout=60) == 0, server.log()
    assert "draining" in server.log()
    # Refusals are what SIGTERM asked for: logged, but below ERROR, so a rolling update pages nobody.
    events = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    refusals = [e for e in events if e.get("status") == 503 and e["message"].endswith("server is shutting down")]
    assert refusals and {(e["logger"], e["level"]) for e in refusals} == {("hotserve.request", "INFO")}, refusals


async def _inflight(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("hotserve_inflight_requests "))


async def _refuses(client: httpx.AsyncClient) -> bool:
    response = await client.get("/v2/models/gated/ready")
    return response.status_code == 503

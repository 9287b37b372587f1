"""A corrupt model does not stop the good one; SIGTERM drains accepted requests and exits 0."""

from __future__ import annotations

import asyncio
import signal

import httpx
import orjson
import pytest

from gated_serve import GateClient
from load_tests.server_process import ServerProcess

pytestmark = pytest.mark.integration

BODY = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [7.0]}]})


async def test_corrupt_model_fails_alone_and_the_good_one_serves(draining_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=draining_server.base_url, timeout=30) as client:
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
    assert "sha256" in draining_server.log()


async def test_sigterm_finishes_accepted_requests_refuses_new_ones_and_exits_0(
        draining_server: ServerProcess, draining_gate: GateClient) -> None:
    accepted = 4
    async with httpx.AsyncClient(base_url=draining_server.base_url, timeout=60) as client, \
            draining_gate.held(), asyncio.timeout(60):
        held = [asyncio.create_task(client.post("/v2/models/gated/infer", content=BODY))
                for _ in range(accepted)]
        await draining_gate.wait_entered(1)  # one running (max_batch_size 1, one instance) ...
        while await _inflight(client) < accepted:  # ... and, once all four are admitted, three queued
            pass
        draining_server.process.send_signal(signal.SIGTERM)
        while (await client.get("/v2/health/ready")).json() != {"ready": False} or not await _refuses(client):
            pass
        refused = await client.post("/v2/models/gated/infer", content=BODY)
        await draining_gate.open()
        responses = await asyncio.gather(*held)
    assert (refused.status_code, refused.json()) == (503, {"error": "server is shutting down"})
    assert [r.status_code for r in responses] == [200] * accepted
    assert all(r.json()["outputs"][0]["data"] == [7.0] for r in responses)
    assert draining_server.process.wait(timeout=60) == 0, draining_server.log()
    assert "draining" in draining_server.log()


async def _inflight(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("hotserve_inflight_requests "))


async def _refuses(client: httpx.AsyncClient) -> bool:
    response = await client.get("/v2/models/gated/ready")
    return response.status_code == 503

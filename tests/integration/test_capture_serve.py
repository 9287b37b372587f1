"""Capture on a real `hotserve serve`: v1 (the row after assembly, by feature name), v2 REST and gRPC
requests with the ids the server echoed, the shadow's answers beside the primary's, a per-model
share set through the admin API (audited, kept in the control state), and SIGTERM under load losing
no accepted record (rows in Parquet = rows the server accepted = rows clients got answers for)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pyarrow.dataset as ds
import pytest
import tritonclient.grpc as grpcclient

from load_tests.server_process import ServerProcess, free_port, start_server
from onnx_models import TAB_COLUMNS, write_multi, write_tabular
from server.cli import main as hotserve

pytestmark = pytest.mark.integration

TOKEN = "capture-integration-token-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
EXIT_GUARD_S = 120.0


def serve(tmp_path: Path, sink: Path, grpc_port: int | None = None, **env: str) -> ServerProcess:
    repository = tmp_path / "repository"
    if not repository.exists():
        write_tabular(repository, 1)
        write_tabular(repository, 2)
        write_multi(repository)
    settings = {
        "HOTSERVE_CAPTURE_SINK": str(sink),
        "HOTSERVE_ADMIN_TOKEN": TOKEN,
        "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
        "HOTSERVE_INTRA_OP_THREADS": "1",
        **env,
    }
    if grpc_port is not None:
        settings["HOTSERVE_GRPC_PORT"] = str(grpc_port)
    return start_server(repository, tmp_path / f"server-{free_port()}.log", env=settings, grace_s=30.0)


def captured(sink: Path, model: str) -> list[dict[str, object]]:
    rows = ds.dataset(sink / model, format="parquet", partitioning="hive").to_table().to_pylist()
    return sorted(rows, key=lambda r: (str(r["request_id"]), int(r["row"])))  # type: ignore[call-overload]


def records(n: int, start: float = 0.0) -> list[dict[str, float]]:
    return [{name: start + i + k / 10 for k, name in enumerate(TAB_COLUMNS)} for i in range(n)]


async def test_each_protocol_is_captured_with_its_id_the_features_as_run_and_the_shadows_answer(tmp_path: Path) -> None:
    sink = tmp_path / "capture"
    grpc_port = free_port()
    server = serve(
        tmp_path,
        sink,
        grpc_port,
        HOTSERVE_SHADOW_YIELD_TO_PRIMARY="false",
        HOTSERVE_SHADOW_MAX_INFERENCE_SHARE="1",
        HOTSERVE_CAPTURE_SHADOW_WAIT_S="60",
    )
    with server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            shadow = await client.put("/admin/models/tab/shadow", json={"version": 1}, headers=AUTH)
            assert shadow.status_code == 200, shadow.text
            v1 = await client.post(
                "/v1/models/tab:predict", json={"instances": records(2)}, headers={"x-request-id": "v1-request"}
            )
            assert v1.status_code == 200 and v1.headers["x-request-id"] == "v1-request"
            body = {
                "inputs": [
                    {"name": "a", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
                    {"name": "b", "datatype": "INT64", "shape": [2, 2], "data": [7, 8, 9, 10]},
                    {"name": "h", "datatype": "FP16", "shape": [2, 2], "data": [0.5, 1, 1.5, 2]},
                    {"name": "c", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]},
                ]
            }
            v2 = await client.post("/v2/models/multi/infer", json=body)
            assert v2.status_code == 200
            generated_id = v2.headers["x-request-id"]  # none sent: the server's own, echoed
            off = await client.put("/admin/models/multi/capture", json={"share": 0}, headers=AUTH)
            assert off.status_code == 200 and off.json()["model"]["capture"] == 0
            assert (
                await client.post("/v2/models/multi/infer", json=body, headers={"x-request-id": "no"})
            ).status_code == 200
            state = (await client.get("/admin/models/multi/capture", headers=AUTH)).json()
            assert state == {
                "model": "multi",
                "enabled": True,
                "share": 0.0,
                "override": 0.0,
                "default": 1.0,
                "sink": str(sink),
            }
            bad = await client.put("/admin/models/multi/capture", json={"share": 1.5}, headers=AUTH)
            assert bad.status_code == 400
            audit = (await client.get("/admin/audit", params={"model": "multi"}, headers=AUTH)).json()
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        features = grpcclient.InferInput("features", [1, 4], "FP32")
        features.set_data_from_numpy(np.array([[9.0, 8.0, 7.0, 6.0]], np.float32))
        grpc.infer("tab", [features], headers={"x-request-id": "grpc-request"})
        grpc.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=EXIT_GUARD_S) == 0, server.log()
    entries = audit["entries"] if isinstance(audit, dict) else audit
    assert any(e["action"] == "capture" and e["detail"] == "share 0.0" for e in entries), entries

    tab = captured(sink, "tab")
    assert [(r["request_id"], r["row"], r["protocol"], r["version"]) for r in tab] == [
        ("grpc-request", 0, "grpc", 2),
        ("v1-request", 0, "v1", 2),
        ("v1-request", 1, "v1", 2),
    ]
    first = tab[1]
    assert {name: first[f"in.{name}"] for name in TAB_COLUMNS} == pytest.approx(records(1)[0])
    assert first["out.score"] == pytest.approx(v1.json()["predictions"][0][0])
    assert all(r["shadow_version"] == 1 and isinstance(r["shadow.score"], float) for r in tab)
    assert tab[0]["in.amount"] == 9.0  # a v2 tensor of a version with a feature spec, by feature name too

    multi = captured(sink, "multi")
    assert [(r["request_id"], r["row"], r["protocol"]) for r in multi] == [
        (generated_id, 0, "v2"),
        (generated_id, 1, "v2"),
    ]
    assert multi[1]["in.a"] == [4.0, 5.0, 6.0] and multi[1]["in.c"] == "y" and multi[1]["out.c_same"] == "y"
    assert multi[0]["out.a_sum"] == 6.0 and multi[0]["out.b_twice"] == [14.0, 16.0]


async def test_the_per_model_share_survives_a_restart(tmp_path: Path) -> None:
    sink = tmp_path / "capture"
    with serve(tmp_path, sink) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            assert (
                await client.put("/admin/models/tab/capture", json={"share": 0.25}, headers=AUTH)
            ).status_code == 200
    with serve(tmp_path, sink) as again:
        async with httpx.AsyncClient(base_url=again.base_url, timeout=60) as client:
            state = (await client.get("/admin/models/tab/capture", headers=AUTH)).json()
            assert (state["share"], state["override"]) == (0.25, 0.25)
            cleared = await client.delete("/admin/models/tab/capture", headers=AUTH)
            assert cleared.json()["model"]["capture"] is None
            assert (await client.get("/admin/models/tab/capture", headers=AUTH)).json()["share"] == 1.0


def test_the_cli_shows_sets_and_clears_a_models_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = tmp_path / "capture"
    monkeypatch.setenv("HOTSERVE_ADMIN_TOKEN", TOKEN)
    with serve(tmp_path, sink) as server:
        url = ["--url", server.base_url]

        def said(*argv: str) -> str:
            assert hotserve(["models", "capture", *argv, *url]) == 0
            return re.sub(r" \(revision \d+\)$", "", capsys.readouterr().out.strip())

        assert said("tab") == f"tab: captures 100% of its answered requests (the default is 100%) to {sink}"
        assert said("tab", "25%") == "capture set for tab: 25% of its answered requests, on every replica"
        assert (
            said("tab") == f"tab: captures 25% of its answered requests (its own share; the default is 100%) to {sink}"
        )
        assert said("tab", "--off") == "capture off for tab: none of its answered requests are captured"
        state = httpx.get(f"{server.base_url}/admin/models/tab/capture", headers=AUTH, timeout=60).json()
        assert (state["share"], state["override"]) == (0.0, 0.0)
        assert said("tab", "--default") == (
            "capture of tab back to each replica's default share (HOTSERVE_CAPTURE_SAMPLE)"
        )
        assert hotserve(["models", "capture", "tab", "--json", *url]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert (doc["share"], doc["override"], doc["sink"]) == (1.0, None, str(sink))

        assert hotserve(["models", "capture", "nope", "0.5", *url]) == 1
        assert capsys.readouterr().err.startswith("hotserve models capture: 404: ")
        audit = httpx.get(f"{server.base_url}/admin/audit?model=tab", headers=AUTH, timeout=60).json()["entries"]
        assert [e["detail"] for e in audit if e["action"] == "capture"] == [
            "share 0.25",
            "share 0.0",
            "the server's default",
        ]


async def test_sigterm_under_load_loses_no_accepted_capture_record(tmp_path: Path) -> None:
    sink = tmp_path / "capture"
    server = serve(tmp_path, sink)
    answered: list[int] = []  # rows of every request answered 200
    refused = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while not refused.is_set():
            rows = 1 + (worker + n) % 3
            n += 1
            try:
                response = await client.post("/v1/models/tab:predict", json={"instances": records(rows, worker)})
            except httpx.TransportError:  # the listening socket is closed: the server is gone
                refused.set()
                return
            if response.status_code == 200:
                answered.append(rows)
            elif response.status_code == 503:  # draining
                refused.set()
            else:
                raise AssertionError(response.text)

    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        workers = [asyncio.create_task(client_loop(client, w)) for w in range(16)]
        while len(answered) < 300 and not any(w.done() for w in workers):
            await asyncio.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*workers)
    assert server.process.wait(timeout=EXIT_GUARD_S) == 0, server.log()
    stopped = re.search(r"capture writer stopped: (\d+) rows accepted, (\d+) rows held unwritten", server.log())
    assert stopped is not None, server.log()[-3000:]
    accepted, held = int(stopped.group(1)), int(stopped.group(2))
    rows = ds.dataset(sink, format="parquet", partitioning="hive").count_rows()
    assert (rows, held) == (accepted, 0)
    assert rows == sum(answered) and rows > 0
    assert "never written" not in server.log()
    assert not list(sink.rglob(".*"))  # no temporary (half) file left behind

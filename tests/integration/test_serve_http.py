"""A real `hotserve serve` process: numbers match onnxruntime, concurrency, batching, every error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from gated_serve import GateClient
from load_tests.server_process import ServerProcess
from onnx_models import TAB_COLUMNS

NOT_LOADED = (
    "model 'tab' version 1 is AVAILABLE (not loaded): load it to serve pinned requests "
    "(`hotserve models load tab 1`, or POST /admin/models/tab/versions/1/load)"
)
"""What a request pinned to a version that is not loaded is answered (503)."""

pytestmark = pytest.mark.integration


def _session(repository: Path, name: str, version: int) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(repository / name / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def _features(seed: int, rows: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)


def _v2_json(features: np.ndarray, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {"name": "features", "datatype": "FP32", "shape": list(features.shape), "data": features.tolist()}
            ],
            **extra,
        }
    )


def _score(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


async def test_json_binary_and_v1_answers_match_onnxruntime_in_process(server: ServerProcess, repository: Path) -> None:
    features = _features(seed=1, rows=5)
    expected = {v: _session(repository, "tab", v).run(None, {"features": features})[0] for v in (1, 2)}
    assert not np.allclose(expected[1], expected[2])
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        served = _score(await client.post("/v2/models/tab/infer", content=_v2_json(features)))
        np.testing.assert_allclose(served, expected[2], rtol=1e-6)
        pinned = _score(await client.post("/v2/models/tab/versions/2/infer", content=_v2_json(features)))
        np.testing.assert_allclose(pinned, expected[2], rtol=1e-6)
        # v1 is in the repository but not loaded: only the production version (newest) is.
        unloaded = await client.post("/v2/models/tab/versions/1/infer", content=_v2_json(features))
        assert (unloaded.status_code, unloaded.json()) == (503, {"error": NOT_LOADED})

        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [5, 4],
                        "parameters": {"binary_data_size": features.nbytes},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        response = await client.post(
            "/v2/models/tab/infer",
            content=header + features.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
        assert "server" not in response.headers  # the software is nobody's business
        assert "date" in response.headers  # RFC 9110: an origin server with a clock sends it
        length = int(response.headers["inference-header-content-length"])
        (output,) = orjson.loads(response.content[:length])["outputs"]
        assert output["parameters"]["binary_data_size"] == 5 * 4
        binary = np.frombuffer(response.content[length:], dtype=np.float32).reshape(output["shape"])
        np.testing.assert_array_equal(binary, expected[2])

        records = [dict(zip(TAB_COLUMNS, row)) for row in features.tolist()]
        predicted = await client.post("/v1/models/tab:predict", json={"instances": records})
        assert predicted.status_code == 200
        assert predicted.json()["model_version"] == "2"
        np.testing.assert_allclose(
            np.asarray(predicted.json()["predictions"], dtype=np.float32), expected[2], rtol=1e-6
        )


async def test_v1_predict_pinned_to_a_version_as_kserve_v1_clients_send_it(
    server: ServerProcess, repository: Path
) -> None:
    features = _features(seed=2, rows=3)
    expected = _session(repository, "tab", 2).run(None, {"features": features})[0]
    records = [dict(zip(TAB_COLUMNS, row)) for row in features.tolist()]
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        pinned = await client.post("/v1/models/tab/versions/2:predict", json={"instances": records})
        assert pinned.status_code == 200 and pinned.json()["model_version"] == "2"
        np.testing.assert_allclose(np.asarray(pinned.json()["predictions"], dtype=np.float32), expected, rtol=1e-6)
        unloaded = await client.post("/v1/models/tab/versions/1:predict", json={"instances": records})
        assert (unloaded.status_code, unloaded.json()) == (503, {"error": NOT_LOADED})
        unknown = await client.post("/v1/models/tab/versions/9:predict", json={"instances": records})
        assert (unknown.status_code, unknown.json()) == (404, {"error": "model 'tab' version 9 not found"})


async def test_several_inputs_and_outputs_of_different_dtypes(server: ServerProcess, repository: Path) -> None:
    a = np.array([[1.5, -2.0, 0.5], [-1.0, -1.0, 4.0]], dtype=np.float32)
    b = np.array([[1, -7], [2**40, 3]], dtype=np.int64)
    h = np.array([[0.5, 1.25], [-3.0, 2.0]], dtype=np.float16)
    c = ["x", "h\u00e9llo"]
    expected = _session(repository, "multi", 1).run(None, {"a": a, "b": b, "h": h, "c": np.array(c, dtype=object)})
    names = ["a_sum", "b_twice", "a_positive", "h_double", "c_same"]
    c_raw = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in c)
    header = orjson.dumps(
        {
            "id": "multi-1",
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 3], "data": a.tolist()},
                {"name": "b", "datatype": "INT64", "shape": [2, 2], "parameters": {"binary_data_size": b.nbytes}},
                {"name": "h", "datatype": "FP16", "shape": [2, 2], "data": h.ravel().tolist()},
                {"name": "c", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(c_raw)}},
            ],
            "outputs": [{"name": n, "parameters": {"binary_data": n in ("h_double", "c_same")}} for n in names],
        }
    )
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v2/models/multi/infer",
            content=header + b.tobytes() + c_raw,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    doc = orjson.loads(response.content[:length])
    assert doc["id"] == "multi-1"
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert [o["datatype"] for o in doc["outputs"]] == ["FP32", "INT64", "BOOL", "FP16", "BYTES"]
    np.testing.assert_array_equal(np.asarray(outputs["a_sum"]["data"], np.float32).reshape(2, 1), expected[0])
    np.testing.assert_array_equal(np.asarray(outputs["b_twice"]["data"]).reshape(2, 2), expected[1])
    assert outputs["a_positive"]["data"] == expected[2].ravel().tolist()
    tail = response.content[length:]
    h_size = outputs["h_double"]["parameters"]["binary_data_size"]
    np.testing.assert_array_equal(np.frombuffer(tail[:h_size], np.float16).reshape(2, 2), expected[3])
    assert tail[h_size:] == c_raw  # BYTES: length-prefixed, UTF-8 intact through onnxruntime


async def test_concurrent_requests_with_mixed_rows_each_get_their_own_rows(
    server: ServerProcess, repository: Path
) -> None:
    session = _session(repository, "tab", 2)
    requests = [_features(seed=100 + i, rows=1 + i % 5) for i in range(300)]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:
        batches_before = _sum_metric((await client.get("/metrics")).text, "hotserve_batches_total", 'model="tab"')
        responses = await asyncio.gather(*(client.post("/v2/models/tab/infer", content=_v2_json(f)) for f in requests))
        text = (await client.get("/metrics")).text
    for features, response in zip(requests, responses, strict=True):
        np.testing.assert_allclose(_score(response), session.run(None, {"features": features})[0], rtol=1e-6)
    batches = _sum_metric(text, "hotserve_batches_total", 'model="tab"') - batches_before
    assert 0 < batches < len(requests), "concurrent requests were never batched together"
    ones = _sum_metric(text, "hotserve_batch_size_bucket", 'le="1.0",model="tab"')
    count = _sum_metric(text, "hotserve_batch_size_count", 'model="tab"')
    assert count > ones


async def test_error_cases_get_their_status_and_message_while_others_are_served(server: ServerProcess) -> None:
    good = _v2_json(_features(seed=3, rows=2))
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        (
            "/v2/models/tab/infer",
            orjson.dumps({"inputs": [{"name": "feats", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
            {},
            400,
            "inputs[0].name: expected one of ['features'], got 'feats'",
        ),
        (
            "/v2/models/tab/infer",
            orjson.dumps(
                {"inputs": [{"name": "features", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
            ),
            {},
            400,
            "inputs.features.datatype: expected FP32, got 'INT64'",
        ),
        (
            "/v2/models/tab/infer",
            orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
            {},
            400,
            "inputs.features.shape: expected [-1, 4], got [1, 3] (axis 1 is 3)",
        ),
        (
            "/v2/models/tab/infer",
            orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4]}]}),
            {},
            400,
            "inputs.features.data: expected 8 values for shape [2, 4], got 4 values",
        ),
        (
            "/v2/models/tab/infer",
            orjson.dumps(
                {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, "x", 3, 4]}]}
            ),
            {},
            400,
            "inputs.features.data: expected FP32 values, got strings",
        ),
        (
            "/v2/models/tab/infer",
            _v2_json(_features(1, 1), outputs=[{"name": "nope"}]),
            {},
            400,
            "outputs[0].name: expected one of ['score'], got 'nope'",
        ),
        (
            "/v1/models/tab:predict",
            orjson.dumps({"instances": [{"amount": 1, "age": 2, "hour": 3}]}),
            {},
            400,
            "instances[0].count: missing",
        ),
        ("/v2/models/nope/infer", good, {}, 404, "model 'nope' not found"),
        ("/v2/models/tab/versions/7/infer", good, {}, 404, "model 'tab' version 7 not found"),
        (
            "/v2/models/tab/infer",
            b" " * 70_000,
            {},
            413,
            "request body of 70000 bytes exceeds the limit of 65536 bytes",
        ),
        (
            "/v2/models/tab/infer",
            _v2_json(_features(1, 1), parameters={"timeout": 1}),
            {},
            504,
            "deadline of 0 ms passed before inference ran",
        ),
    ]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        for path, body, headers, status, message in cases:
            bad, ok = await asyncio.gather(
                client.post(path, content=body, headers=headers), client.post("/v2/models/tab/infer", content=good)
            )
            assert (bad.status_code, bad.json()) == (status, {"error": message}), path
            assert ok.status_code == 200


async def test_full_queue_answers_429_with_retry_after(server: ServerProcess, gate: GateClient) -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client, gate.held(), asyncio.timeout(60):
        running = asyncio.create_task(client.post("/v2/models/gated_tiny/infer", content=body))
        await gate.wait_entered(1)  # the one worker is busy: of the next seven, one fits the queue of 1
        later = [asyncio.create_task(client.post("/v2/models/gated_tiny/infer", content=body)) for _ in range(7)]
        waiting = set(later)
        while len(waiting) > 1:
            _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        other = await client.post("/v2/models/tab/infer", content=_v2_json(_features(seed=4, rows=1)))
        await gate.open()
        responses = await asyncio.gather(running, *later)
    codes = sorted(r.status_code for r in responses)
    refused = [r for r in responses if r.status_code == 429]
    assert refused and set(codes) == {200, 429}, codes
    assert codes == [200] * 2 + [429] * 6
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json() == {"error": "model 'gated_tiny' version 1 is overloaded: queue of 1 is full"}
    assert other.status_code == 200


async def test_metadata_reports_provider_and_lineage(server: ServerProcess, repository: Path) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        doc = (await client.get("/v2/models/tab")).json()
        server_doc = (await client.get("/v2")).json()
    assert doc["versions"] == ["2"]  # v1 is in the repository but not loaded (not production)
    assert doc["execution_provider"] == "CPUExecutionProvider"
    assert doc["lineage"]["git_commit"] == "0123abc"
    assert doc["lineage"]["metrics"] == {"auc": 0.52}
    assert "binary_tensor_data" in server_doc["extensions"]


def _sum_metric(text: str, name: str, *label_parts: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(part in line for part in label_parts):
            total += float(line.rsplit(" ", 1)[1])
    return total

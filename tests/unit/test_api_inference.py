"""Inference routes over a fake registry: v2 JSON/binary, v1, deadlines, errors, metrics, draining."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import numpy as np
import orjson
import pytest

from server.contract.manifest import FeatureSpec
from server.errors import DeadlineExceeded, InferenceFailed, InvalidInput, ModelNotReady, Overloaded
from server.settings import Settings
from tests.fakes import FakeRegistry, FakeServedVersion, make_manifest, serving

SPEC = FeatureSpec(input="features", columns=["a", "b"], request_features=["a", "b"])


def _tabular(version: int) -> FakeServedVersion:
    manifest = make_manifest(
        "tab",
        [("features", "FP32", [-1, 2])],
        [("score", "FP32", [-1, 1]), ("label", "INT64", [-1])],
        version=version,
        features=SPEC,
    )

    def compute(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        score = inputs["features"].sum(axis=1, keepdims=True) * version
        return {"score": score, "label": (score[:, 0] > 5).astype(np.int64)}

    return FakeServedVersion(manifest, compute)


@pytest.fixture
def versions() -> dict[int, FakeServedVersion]:
    return {1: _tabular(1), 2: _tabular(2)}


@pytest.fixture
async def client(settings: Settings, versions: dict[int, FakeServedVersion]) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, FakeRegistry(list(versions.values()))) as c:
        yield c


def _v2(rows: list[list[float]], **extra: object) -> bytes:
    return orjson.dumps(
        {
            "id": "req-7",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [len(rows), 2], "data": rows}],
            **extra,
        }
    )


async def test_v2_json_infer_answers_every_output_of_the_serving_version(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/tab/infer", content=_v2([[1, 2], [3, 4]], parameters={"k": "v"}))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["model_name"] == "tab" and doc["model_version"] == "2" and doc["id"] == "req-7"
    assert doc["parameters"] == {"k": "v"}
    assert doc["outputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [2, 1], "data": [6.0, 14.0]},
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 1]},
    ]


async def test_pinned_version_answers_from_that_version(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/tab/versions/1/infer", content=_v2([[1, 2]], outputs=[{"name": "score"}]))
    assert response.status_code == 200
    doc = response.json()
    assert doc["model_version"] == "1"
    assert [o["name"] for o in doc["outputs"]] == ["score"] and doc["outputs"][0]["data"] == [3.0]


async def test_binary_request_and_response_round_trip(client: httpx.AsyncClient) -> None:
    values = np.array([[1, 2], [3, 4.5]], dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ],
            "outputs": [{"name": "score", "parameters": {"binary_data": True}}, {"name": "label"}],
        }
    )
    response = await client.post(
        "/v2/models/tab/infer",
        content=header + values.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    doc = orjson.loads(response.content[:length])
    score, label = doc["outputs"]
    assert score["parameters"] == {"binary_data_size": 8} and "data" not in score
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], dtype=np.float32), [6.0, 15.0])
    assert label["data"] == [1, 1]


async def test_v1_predict_assembles_records_and_returns_predictions(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/tab:predict", json={"instances": [{"a": 1, "b": 2}, {"b": 0.5, "a": 0}]})
    assert response.status_code == 200
    assert response.json() == {
        "predictions": [{"score": [6.0], "label": 1}, {"score": [1.0], "label": 0}],
        "model_name": "tab",
        "model_version": "2",
    }
    bad = await client.post("/v1/models/tab:predict", json={"instances": [{"a": 1, "b": 2}, {"a": 1}]})
    assert bad.status_code == 400 and bad.json() == {"error": "instances[1].b: missing"}


async def test_deadline_is_the_sooner_of_timeout_parameter_and_header(
    client: httpx.AsyncClient, versions: dict[int, FakeServedVersion]
) -> None:
    before = time.monotonic()
    await client.post(
        "/v2/models/tab/infer",
        content=_v2([[1, 2]], parameters={"timeout": 60_000_000}),
        headers={"Hotserve-Timeout-Ms": "1000"},
    )
    after = time.monotonic()
    deadline = versions[2].calls[-1].deadline
    assert deadline is not None and before + 1.0 <= deadline <= after + 1.0
    await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]))
    assert versions[2].calls[-1].deadline is None
    bad = await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]), headers={"Hotserve-Timeout-Ms": "-3"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "Hotserve-Timeout-Ms: expected a positive number of milliseconds, got '-3'"}


@pytest.mark.parametrize(
    "error, status, message",
    [
        (
            Overloaded("tab", 2, queue_size=4, retry_after_s=3),
            429,
            "model 'tab' version 2 is overloaded: queue of 4 is full",
        ),
        (DeadlineExceeded(0.05), 504, "deadline of 50 ms passed before inference ran"),
        (InferenceFailed("onnxruntime: bad shape"), 500, "onnxruntime: bad shape"),
        (ModelNotReady("model 'tab' version 2 is closing"), 503, "model 'tab' version 2 is closing"),
        (
            InvalidInput("inputs", detail="3 rows exceed max_batch_size 2"),
            400,
            "inputs: 3 rows exceed max_batch_size 2",
        ),
        (RuntimeError("secret internals"), 500, "internal server error"),
    ],
)
async def test_engine_errors_map_to_their_status_and_message(
    client: httpx.AsyncClient, versions: dict[int, FakeServedVersion], error: Exception, status: int, message: str
) -> None:
    versions[2].error = error
    response = await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]))
    assert response.status_code == status
    assert response.json() == {"error": message}
    if status == 429:
        assert response.headers["retry-after"] == "3"
    versions[2].error = None
    assert (await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]))).status_code == 200


@pytest.mark.parametrize(
    "path, message",
    [
        ("/v2/models/nope/infer", "model 'nope' not found"),
        ("/v2/models/tab/versions/9/infer", "model 'tab' version 9 not found"),
        ("/v1/models/nope:predict", "model 'nope' not found"),
        ("/v2/models/no%20such/infer", "model 'no such' not found"),
    ],
)
async def test_unknown_models_and_versions_are_404(client: httpx.AsyncClient, path: str, message: str) -> None:
    response = await client.post(path, content=_v2([[1, 2]]))
    assert response.status_code == 404 and response.json() == {"error": message}


@pytest.mark.parametrize("version", ["latest", "%C2%B9", "%D9%A3", "1.0", "9" * 19])
async def test_a_malformed_version_in_the_fast_lane_is_400_naming_the_field(
    client: httpx.AsyncClient, version: str
) -> None:
    for path in (f"/v2/models/tab/versions/{version}/infer", f"/v1/models/tab/versions/{version}:predict"):
        response = await client.post(path, content=_v2([[1, 2]]))
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"].startswith("version: expected a version number")


async def test_bodies_over_the_limit_are_413_declared_or_streamed(client: httpx.AsyncClient) -> None:
    big = b" " * 5000
    declared = await client.post("/v2/models/tab/infer", content=big)
    assert declared.status_code == 413
    assert declared.json() == {"error": "request body of 5000 bytes exceeds the limit of 4096 bytes"}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 1000

    streamed = await client.post("/v2/models/tab/infer", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json() == {"error": "request body of 5000 bytes exceeds the limit of 4096 bytes"}


async def test_draining_refuses_new_inference_with_503(client: httpx.AsyncClient) -> None:
    client.app.state.edge.inflight.begin_drain(5.0)  # type: ignore[attr-defined]
    response = await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]))
    assert response.status_code == 503 and response.json() == {"error": "server is shutting down"}
    assert (await client.get("/v2/health/ready")).status_code == 503


async def test_request_metrics_count_codes_with_resolved_labels_only(client: httpx.AsyncClient) -> None:
    await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]))
    await client.post("/v2/models/tab/infer", content=b"{")
    await client.post("/v2/models/unknown-name/infer", content=_v2([[1, 2]]))
    text = (await client.get("/metrics")).text
    assert 'hotserve_requests_total{code="200",model="tab",protocol="v2",version="2"} 1.0' in text
    assert 'hotserve_requests_total{code="400",model="tab",protocol="v2",version="2"} 1.0' in text
    assert 'hotserve_requests_total{code="404",model="",protocol="v2",version=""} 1.0' in text
    assert "unknown-name" not in text
    assert 'hotserve_request_duration_seconds_count{model="tab",protocol="v2",version="2"} 2.0' in text
    assert "hotserve_inflight_requests 0.0" in text


async def _call_asgi(
    client: httpx.AsyncClient, path: str, messages: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Drive the app's ASGI callable with exactly these receive messages (no Content-Length)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked")],
        "server": ("hotserve", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    pending = list(messages)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return pending.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await client.app(scope, receive, send)  # type: ignore[attr-defined]
    return sent


async def test_chunked_body_over_the_limit_is_413_even_when_it_arrives_in_one_message(
    client: httpx.AsyncClient, versions: dict[int, FakeServedVersion]
) -> None:
    sent = await _call_asgi(
        client, "/v2/models/tab/infer", [{"type": "http.request", "body": b" " * 5000, "more_body": False}]
    )
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"]) == {  # type: ignore[arg-type]
        "error": "request body of 5000 bytes exceeds the limit of 4096 bytes"
    }
    assert versions[2].calls == []


async def test_client_leaving_mid_body_is_counted_499_and_not_answered(client: httpx.AsyncClient) -> None:
    sent = await _call_asgi(
        client,
        "/v2/models/tab/infer",
        [{"type": "http.request", "body": b'{"inputs": ', "more_body": True}, {"type": "http.disconnect"}],
    )
    assert sent == []
    text = (await client.get("/metrics")).text
    assert 'hotserve_requests_total{code="499",model="tab",protocol="v2",version="2"} 1.0' in text
    assert "hotserve_inflight_requests 0.0" in text


async def test_request_id_is_taken_from_the_client_echoed_and_carried_to_the_engine(
    client: httpx.AsyncClient, versions: dict[int, FakeServedVersion]
) -> None:
    sent = await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]), headers={"x-request-id": "client-id-42"})
    assert sent.headers["x-request-id"] == "client-id-42"
    assert versions[2].calls[-1].request_id == "client-id-42"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = await client.post(
        "/v1/models/tab:predict",
        json={"instances": [{"a": 1, "b": 2}]},
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    assert traced.headers["x-request-id"] == trace
    generated = await client.post(
        "/v2/models/tab/infer", content=_v2([[1, 2]]), headers={"x-request-id": "bad id with spaces"}
    )
    assert len(generated.headers["x-request-id"]) == 32
    assert generated.headers["x-request-id"] == versions[2].calls[-1].request_id


async def test_both_lanes_echo_the_request_id_and_share_the_error_body(client: httpx.AsyncClient) -> None:
    fast = await client.post("/v2/models/nope/infer", content=_v2([[1, 2]]), headers={"x-request-id": "a1"})
    routed = await client.get("/v2/models/nope", headers={"x-request-id": "b2"})
    assert (fast.status_code, fast.headers["x-request-id"]) == (404, "a1")
    assert (routed.status_code, routed.headers["x-request-id"]) == (404, "b2")
    assert fast.json() == routed.json() == {"error": "model 'nope' not found"}


async def test_every_routed_request_gives_its_lease_back(
    client: httpx.AsyncClient, versions: dict[int, FakeServedVersion]
) -> None:
    versions[2].error = InvalidInput("features", detail="refused by the fake")
    await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]))
    versions[2].error = None
    await client.post("/v2/models/tab/infer", content=b"{not json")
    await client.post("/v2/models/tab/infer", content=_v2([[1, 2]]))
    assert versions[2].leases == 0 and len(versions[2].calls) == 2


async def test_routing_key_comes_from_the_header_or_under_a_split_from_the_v1_entity(settings: Settings) -> None:
    spec = FeatureSpec(input="features", columns=["a", "b"], request_features=["a", "b"], entity_key="cid")
    manifest = make_manifest("ent", [("features", "FP32", [-1, 2])], [("score", "FP32", [-1, 1])], features=spec)
    registry = FakeRegistry([FakeServedVersion(manifest, lambda i: {"score": i["features"][:, :1]})])
    async with serving(settings, registry) as client:
        record = {"cid": "c-7", "a": 1, "b": 2}
        await client.post(
            "/v1/models/ent:predict", json={"instances": [record]}, headers={"Hotserve-Routing-Key": "from-header"}
        )
        await client.post("/v1/models/ent:predict", json={"instances": [record]})  # no split: no key
        registry.sticky["ent"] = "cid"
        await client.post("/v1/models/ent:predict", json={"instances": [record]})
        await client.post(
            "/v2/models/ent/infer",
            content=orjson.dumps(
                {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
            ),
        )
    assert registry.routing_keys == ["from-header", None, "c-7", None]


async def test_v1_predict_pinned_to_a_version_answers_from_that_version(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/tab/versions/1:predict", json={"instances": [{"a": 1, "b": 2}]})
    assert response.status_code == 200
    assert response.json() == {"predictions": [{"score": [3.0], "label": 0}], "model_name": "tab", "model_version": "1"}
    missing = await client.post("/v1/models/tab/versions/9:predict", json={"instances": [{"a": 1, "b": 2}]})
    assert missing.status_code == 404 and missing.json() == {"error": "model 'tab' version 9 not found"}
    bad = await client.post("/v1/models/tab/versions/one:predict", json={"instances": [{"a": 1, "b": 2}]})
    assert bad.status_code == 400
    assert bad.json() == {"error": "version: expected a version number (a positive integer, ASCII digits), got 'one'"}


async def test_a_pinned_v1_request_is_not_routed_by_its_entity(settings: Settings) -> None:
    spec = FeatureSpec(input="features", columns=["a", "b"], request_features=["a", "b"], entity_key="cid")
    manifest = make_manifest("ent", [("features", "FP32", [-1, 2])], [("score", "FP32", [-1, 1])], features=spec)
    registry = FakeRegistry([FakeServedVersion(manifest, lambda i: {"score": i["features"][:, :1]})])
    registry.sticky["ent"] = "cid"
    async with serving(settings, registry) as client:
        response = await client.post(
            "/v1/models/ent/versions/1:predict", json={"instances": [{"cid": "c-7", "a": 1, "b": 2}]}
        )
    assert response.status_code == 200 and response.json()["model_version"] == "1"
    assert registry.routing_keys == [None]  # pinned: routed before the body, by no key

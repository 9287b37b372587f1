"""A real `hotserve serve` with JSON logs: request ids round-trip, errors are logged with theirs, and every
line the process writes, uvicorn's included, parses as JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from load_tests.server_process import ServerProcess
from onnx_models import write_tabular

pytestmark = pytest.mark.integration

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ROWS = orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})


@pytest.fixture(scope="module")
def json_server(serve_with: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    root = tmp_path_factory.mktemp("log_repository")
    write_tabular(root, 1)
    return serve_with(root, {"HOTSERVE_LOG_FORMAT": "json", "HOTSERVE_ACCESS_LOG": "true"})


def _log_lines(log_path: Path) -> list[dict[str, Any]]:
    text = log_path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a line still being written is not judged yet
    lines = complete.splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # raises on the first line that is not JSON


def _request_events(log_path: Path, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The request events of `request_ids`, polled until all are written: the server logs a
    request after it sent the answer, so the client can read the log before the line is there."""
    deadline = time.monotonic() + 30
    while True:
        events = {line.get("request_id"): line for line in _log_lines(log_path) if line["logger"] == "hotserve.request"}
        if request_ids <= events.keys() or time.monotonic() > deadline:
            return {k: v for k, v in events.items() if isinstance(k, str)}
        time.sleep(0.02)


def test_request_ids_round_trip_from_header_or_traceparent_or_are_generated(json_server: ServerProcess) -> None:
    with httpx.Client(base_url=json_server.base_url) as client:
        sent = client.post("/v2/models/tab/infer", content=ROWS, headers={"X-Request-ID": "client-42"})
        traced = client.post(
            "/v2/models/tab/infer", content=ROWS, headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"}
        )
        fresh = [client.get("/v2/health/ready").headers["x-request-id"] for _ in range(2)]
    assert sent.status_code == traced.status_code == 200
    assert sent.headers["x-request-id"] == "client-42"
    assert traced.headers["x-request-id"] == TRACE_ID
    assert fresh[0] != fresh[1] and all(len(i) == 32 for i in fresh)


def test_an_error_carries_its_request_id_in_the_response_and_the_log(json_server: ServerProcess) -> None:
    with httpx.Client(base_url=json_server.base_url) as client:
        bad = client.post("/v2/models/tab/infer", content=b'{"inputs": 3}', headers={"x-request-id": "bad-1"})
        unknown = client.get("/v2/models/ghost/versions/1")
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "bad-1"
    assert unknown.status_code == 404
    events = _request_events(json_server.log_path, {"bad-1", unknown.headers["x-request-id"]})
    logged = events["bad-1"]
    assert (logged["status"], logged["model"], logged["version"], logged["protocol"], logged["level"]) == (
        400,
        "tab",
        "1",
        "v2",
        "WARNING",
    )
    assert bad.json()["error"] in logged["message"] and logged["duration_ms"] > 0
    assert events[unknown.headers["x-request-id"]]["status"] == 404


def test_every_line_the_process_wrote_is_one_json_object(json_server: ServerProcess) -> None:
    with httpx.Client(base_url=json_server.base_url) as client:
        assert client.post("/v2/models/tab/infer", content=ROWS).status_code == 200
    assert json_server.stop() == 0
    lines = _log_lines(json_server.log_path)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "server.app"} <= loggers, loggers
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert all("request_id" in line for line in access)  # logged inside the request's context

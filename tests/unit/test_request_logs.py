"""Structured logs: the JSON and text formatters, process-wide set-up, request events from both lanes."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from server.api.context import request_id_var
from server.errors import InferenceFailed
from server.logs import JsonFormatter, TextFormatter, configure_logging
from server.settings import Settings
from tests.fakes import FakeRegistry, FakeServedVersion, make_manifest, serving

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
BODY = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})


def _record(message: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("hotserve.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_formatter_writes_one_object_per_line_with_the_request_fields() -> None:
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter().format(
            _record("multi\nline %s", ("x",), model="m", version="2", status=400, duration_ms=1.5)
        )
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc.pop("time").endswith("+00:00")
    assert doc == {
        "level": "WARNING",
        "logger": "hotserve.test",
        "message": "multi\nline x",
        "request_id": "req-1",
        "model": "m",
        "version": "2",
        "status": 400,
        "duration_ms": 1.5,
    }


def test_json_formatter_keeps_a_traceback_on_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(JsonFormatter().format(record))
    assert "request_id" not in doc  # outside a request
    assert doc["exception"].startswith("Traceback") and "ValueError: boom" in doc["exception"]


def test_text_formatter_is_one_readable_line_with_the_request_fields() -> None:
    token = request_id_var.set("req-2")
    try:
        line = TextFormatter().format(_record(status=503, model="m"))
    finally:
        request_id_var.reset(token)
    assert line.endswith("WARNING hotserve.test: hello world [request_id=req-2 model=m status=503]")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name, logger in [
            ("", root),
            *((n, logging.getLogger(n)) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")),
        ]
    }
    yield
    logging.captureWarnings(False)
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name or None)
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_one_formatter_serves_every_logger_including_uvicorns(monkeypatch: pytest.MonkeyPatch, log_format: str) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info", log_format)  # type: ignore[arg-type]
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("server.app").debug("hidden below info")
    logging.getLogger("server.app").warning("careful")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    if log_format == "json":
        assert [(d["logger"], d["message"]) for d in map(json.loads, lines)] == [
            ("uvicorn.error", "Uvicorn running"),
            ("server.app", "careful"),
        ]
    else:
        assert lines[0].endswith("INFO uvicorn.error: Uvicorn running")


# --- request events through the app (both lanes) --------------------------------------------


def _registry(error: Exception | None = None) -> FakeRegistry:
    manifest = make_manifest("m", [("x", "FP32", [-1, 2])], [("y", "FP32", [-1, 2])], version=3)
    return FakeRegistry([FakeServedVersion(manifest, lambda inputs: {"y": inputs["x"] * 2}, error=error)])


def _events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hotserve.request"]


async def test_an_error_is_logged_with_the_request_id_the_response_carries(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hotserve.request")
    async with serving(settings, _registry()) as client:
        bad = await client.post("/v2/models/m/infer", content=b"{", headers={"x-request-id": "abc-123"})
        traced = await client.post(
            "/v2/models/nope/infer", content=BODY, headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
        )
        routed = await client.get("/v2/models/nope")  # the FastAPI lane
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "abc-123"
    assert traced.status_code == 404 and traced.headers["x-request-id"] == TRACE_ID
    generated = routed.headers["x-request-id"]
    assert routed.status_code == 404 and len(generated) == 32
    events = _events(caplog)  # formatted after the requests ended: the records carry their ids
    formatted = [json.loads(JsonFormatter().format(e)) for e in events]
    assert [(d["request_id"], d["status"], d["level"]) for d in formatted] == [
        ("abc-123", 400, "WARNING"),
        (TRACE_ID, 404, "WARNING"),
        (generated, 404, "WARNING"),
    ]
    assert formatted[0]["model"] == "m" and formatted[0]["version"] == "3" and formatted[0]["protocol"] == "v2"
    assert formatted[0]["message"].startswith("POST /v2/models/m/infer 400: ")
    assert bad.json()["error"] in formatted[0]["message"]
    assert "model" not in formatted[1]  # an unknown model is never a label
    assert formatted[2]["message"] == "GET /v2/models/nope 404: " + routed.json()["error"]


async def test_successes_are_not_logged_unless_sampled(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hotserve.request")
    async with serving(settings, _registry()) as client:
        assert (await client.post("/v2/models/m/infer", content=BODY)).status_code == 200
        assert (await client.get("/v2/health/live")).status_code == 200
    assert _events(caplog) == []
    sampled = settings.model_copy(update={"log_success_sample_rate": 1.0})
    async with serving(sampled, _registry()) as client:
        ok = await client.post("/v2/models/m/infer", content=BODY)
        assert (await client.get("/v2/health/live")).status_code == 200  # not an inference: never sampled
    (event,) = _events(caplog)
    doc = json.loads(JsonFormatter().format(event))
    assert (doc["level"], doc["status"], doc["model"], doc["request_id"]) == (
        "INFO",
        200,
        "m",
        ok.headers["x-request-id"],
    )
    assert doc["duration_ms"] >= 0


async def test_server_side_failures_are_logged_as_errors(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hotserve.request")
    async with serving(settings, _registry(InferenceFailed("runtime exploded"))) as client:
        response = await client.post("/v2/models/m/infer", content=BODY)
    assert response.status_code == 500
    (event,) = _events(caplog)
    assert event.levelno == logging.ERROR and event.status == 500  # type: ignore[attr-defined]
    assert event.getMessage().endswith("runtime exploded")
    assert np.isfinite(event.duration_ms)  # type: ignore[attr-defined]


async def test_refusals_while_shutting_down_are_logged_at_info_and_other_503s_at_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hotserve.request")
    registry = _registry()
    registry.not_ready = frozenset({"loading"})
    async with serving(settings, registry) as client:
        not_ready = await client.post("/v2/models/loading/infer", content=BODY)
        client.app.state.edge.inflight.begin_drain(5.0)  # type: ignore[attr-defined]  # what SIGTERM does
        refused = await client.post("/v2/models/m/infer", content=BODY)
        probe = await client.get("/v2/health/ready")
        model_probe = await client.get("/v2/models/m/ready")
    assert [r.status_code for r in (not_ready, refused, probe, model_probe)] == [503] * 4
    assert refused.json() == {"error": "server is shutting down"}
    events = _events(caplog)
    assert [(e.status, e.levelname) for e in events] == [  # type: ignore[attr-defined]
        (503, "ERROR"),  # a model that cannot serve: someone should look
        (503, "INFO"),  # refused because the server is draining: what was asked for
        (503, "INFO"),
        (503, "INFO"),
    ]
    assert events[1].getMessage() == "POST /v2/models/m/infer 503: server is shutting down"

"""The open-loop generator (`load_tests/openloop.c` through `load_tests/open_loop.py`) against the
stack benchmark's reference servers, started as the benchmark starts them: every arrival is sent
once and counted once, answers by status, and a server that answers nothing is reported as such."""

from __future__ import annotations

import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from load_tests.open_loop import SATURATED, calibrate, event_loop_seconds, run_open_loop
from load_tests.server_process import ServerProcess, start_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler"),
]

BODY = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}'


def reference_app(name: str, tmp_path: Path) -> ServerProcess:
    return start_server(
        tmp_path,
        tmp_path / f"{name}.log",
        command=(sys.executable, "-m", "load_tests.stack_apps", name),
        env={"HOTSERVE_STACK_MODEL": str(tmp_path / "no-model")},
        ready_path="/v2/health/ready" if name == "bare" else "/openapi.json",
    )


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[ServerProcess]:
    with reference_app("bare", tmp_path) as server:
        yield server


def test_every_arrival_is_answered_and_counted_once(bare: ServerProcess, tmp_path: Path) -> None:
    result = run_open_loop(f"{bare.base_url}/v2/models/m/infer", BODY, "application/json", None, 400, 1.0, tmp_path)

    assert result.failed == 0
    assert result.unanswered == 0
    assert result.requests_per_s > 0
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    assert 0 <= result.generator_cores


def test_error_answers_are_failures_not_latencies(tmp_path: Path) -> None:
    """The plain app without a model has no inference route: every request is a 404."""
    with reference_app("plain", tmp_path) as plain:
        result = run_open_loop(
            f"{plain.base_url}/v2/models/m/infer", BODY, "application/json", None, 200, 0.5, tmp_path
        )

    assert result.failed == 100
    assert result.unanswered == 0
    assert result.requests_per_s == 0


def test_a_server_that_never_answers_leaves_every_request_unanswered(tmp_path: Path) -> None:
    """Accepts connections, reads, never writes: the generator gives up 5 s after the last arrival."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        result = run_open_loop(
            f"http://127.0.0.1:{port}/x", BODY, "application/json", None, 50, 0.2, tmp_path, connections=4
        )
    finally:
        listener.close()
        for connection in accepted:
            connection.close()

    assert result.unanswered == 10
    assert result.failed == 0
    assert result.requests_per_s == 0


def test_bodies_are_sent_in_turn(tmp_path: Path) -> None:
    received: list[bytes] = []

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the generator's connections are

        def do_POST(self) -> None:  # noqa: N802 (the handler's naming)
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bodies = [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        result = run_open_loop(url, bodies, "application/json", None, 120, 0.5, tmp_path, connections=1)
    finally:
        server.shutdown()
        server.server_close()

    assert (result.failed, result.unanswered) == (0, 0)
    assert received == bodies * 20  # one connection: in the order sent


def test_calibration_raises_a_rate_that_leaves_the_event_loop_mostly_idle(bare: ServerProcess, tmp_path: Path) -> None:
    """At 40 requests per second the bare app's loop is far from busy half the time on any machine:
    each step doubles the rate (the most a step may), and the loop's CPU is read from /proc."""
    before = event_loop_seconds(bare.process.pid)
    found = calibrate(
        f"{bare.base_url}/x", BODY, "application/json", bare.process.pid, 0.5, 40, tmp_path, duration_s=0.5
    )

    assert [rate for rate, _ in found.steps] == [40, 80, 160]
    assert found.rate == 320
    assert all(busy < SATURATED for _, busy in found.steps)
    assert event_loop_seconds(bare.process.pid) > before

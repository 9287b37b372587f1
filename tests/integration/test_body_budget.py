"""Request bodies in flight share one budget (`HOTSERVE_MAX_BODY_BYTES_IN_FLIGHT`, default 256 MiB)
on a real `hotserve serve`: four uploads of 67 MB (under the 64 MiB per-request limit) hold their
declared lengths while their bodies arrive; a fifth upload, a chunked one and an admin body are
refused with 503 and `Retry-After` before their bodies are read, a small inference still fits,
and the budget comes back once an upload is answered. Uploads are held open on raw sockets, and
the test waits on the exported gauge, never on time."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from load_tests.server_process import ServerProcess, start_server
from onnx_models import write_tabular

pytestmark = pytest.mark.integration

TOKEN = "body-budget-token-0123456"
HANG_GUARD_S = 60.0
BUDGET = 256 * 1024 * 1024
UPLOAD = 67_000_000
HELD = 4
INFER = "/v2/models/tab/infer"
SMALL = orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.1] * 4}]})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("body_budget")
    write_tabular(root / "repository", 1)
    started = start_server(
        root / "repository",
        root / "server.log",
        env={
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
            "HOTSERVE_ADMIN_TOKEN": TOKEN,
        },
    )
    yield started
    assert started.stop() == 0, started.log()


def open_upload(server: ServerProcess, path: str, head: dict[str, str], first: bytes) -> socket.socket:
    """A POST whose head and first body bytes are sent, the rest not yet."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD_S)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in head.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the response on `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def in_flight(server: ServerProcess) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=HANG_GUARD_S).text
    match = re.search(r"^hotserve_request_body_bytes_in_flight (\S+)$", text, re.M)
    assert match, "the gauge is exported"
    return float(match.group(1))


def poll(condition: Callable[[], bool], what: str) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < HANG_GUARD_S, what
        time.sleep(0.02)


def test_bodies_beyond_the_budget_in_flight_get_503_before_they_are_read(server: ServerProcess) -> None:
    held = [open_upload(server, INFER, {"Content-Length": str(UPLOAD)}, b"x" * 1_000_000) for _ in range(HELD)]
    try:
        poll(lambda: in_flight(server) == HELD * UPLOAD, "the four uploads hold their declared lengths")

        fifth = open_upload(server, INFER, {"Content-Length": str(UPLOAD)}, b"")
        status, headers, body = answer(fifth)
        assert status == 503 and headers["retry-after"] == "1", body
        assert b"limit of 268435456 bytes in flight" in body
        fifth.close()

        chunked = open_upload(server, INFER, {"Transfer-Encoding": "chunked"}, b"f4240\r\n" + b"x" * 1_000_000)
        status, headers, body = answer(chunked)  # its first chunk does not fit in what is left
        assert status == 503 and headers["retry-after"] == "1", body
        chunked.close()

        admin = open_upload(
            server,
            "/admin/models/tab/aliases/canary",
            {"Content-Length": "1000000", "Authorization": f"Bearer {TOKEN}"},
            b"",
        )
        status, headers, body = answer(admin)  # the route gate: the FastAPI lane shares the budget
        assert status == 503 and headers["retry-after"] == "1", body
        admin.close()

        small = httpx.post(server.base_url + INFER, content=SMALL, timeout=HANG_GUARD_S)
        assert small.status_code == 200, small.text  # what is left still serves small requests

        held[0].sendall(b"x" * (UPLOAD - 1_000_000))  # the rest of the first upload: read, then refused
        status, _, body = answer(held[0])
        assert status == 400, body
        poll(lambda: in_flight(server) == (HELD - 1) * UPLOAD, "the answered upload gives its share back")
        again = open_upload(server, INFER, {"Content-Length": str(len(SMALL) + 1_000_000)}, SMALL)
        again.sendall(b" " * 1_000_000)  # a 1 MB body (JSON whitespace) now fits
        status, _, body = answer(again)
        assert status == 200, body
        again.close()
    finally:
        for sock in held:
            sock.close()
    poll(lambda: in_flight(server) == 0, "uploads whose clients left give their share back")


def test_a_budget_below_the_largest_body_is_refused_at_start(tmp_path: Path) -> None:
    write_tabular(tmp_path / "repository", 1)
    with pytest.raises(RuntimeError, match="max_body_bytes_in_flight .* is below the largest body allowed"):
        start_server(
            tmp_path / "repository",
            tmp_path / "server.log",
            env={
                "HOTSERVE_MAX_BODY_BYTES_IN_FLIGHT": str(1024 * 1024),
                "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            },
        )

"""The FastAPI routes of a real server: credentials before the body, and a bounded body."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from load_tests.server_process import ServerProcess, start_server
from onnx_models import write_tabular

pytestmark = pytest.mark.integration

TOKEN = "gate-operator-token-0123"
BODY_BYTES = 100 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)
RSS_SLACK_BYTES = 40 * 1024 * 1024
"""Less than half the body: a server that read it would have grown by at least all of it."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("gate")
    write_tabular(root / "repository", 1)
    with start_server(
        root / "repository",
        root / "server.log",
        env={
            "HOTSERVE_ADMIN_TOKENS": f"ops:{TOKEN}",
            "HOTSERVE_CONTROL_STATE_PATH": str(root / "control.json"),
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_MAX_ROUTE_REQUEST_BYTES": str(1024 * 1024),
        },
    ) as server:
        yield server


def rss_bytes(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def send_unauthenticated_body(server: ServerProcess, headers: str, piece: bytes) -> bytes:
    """Send the request head, then all of the 100 MB body while the server lets us; returns what it
    answered (read after the body: a server that buffers the body answers only then)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(f"PUT /admin/models/tab/aliases/production HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode("latin-1"))
        sent = 0
        try:
            while sent < BODY_BYTES:
                sock.sendall(piece)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                piece = sock.recv(65536)
                if not piece:
                    break
                answer += piece
        except ConnectionResetError:
            pass
        return answer


@pytest.mark.parametrize(
    ("headers", "piece"),
    [
        (f"Content-Length: {BODY_BYTES}\r\n", CHUNK),
        ("Transfer-Encoding: chunked\r\n", f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_an_unauthenticated_100_mb_body_to_an_admin_route_is_refused_unread(
    server: ServerProcess, headers: str, piece: bytes
) -> None:
    before = rss_bytes(server)
    answer = send_unauthenticated_body(server, headers, piece)
    grown = rss_bytes(server) - before
    assert grown < RSS_SLACK_BYTES, f"the server grew by {grown} bytes"
    if answer:  # the answer may be lost to the reset that follows it; it is a 401 when it arrives
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert httpx.get(server.base_url + "/v2/health/ready", timeout=10).status_code == 200


def test_an_authenticated_body_over_the_route_limit_gets_413_and_a_wrong_token_403(server: ServerProcess) -> None:
    url = server.base_url + "/admin/models/tab/aliases/production"
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    with httpx.Client(timeout=30) as http:
        refused = http.put(url, content=big, headers={"Authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 413
        assert refused.json() == {"error": f"request body of {len(big)} bytes exceeds the limit of 1048576 bytes"}
        chunked = http.put(url, content=iter([big]), headers={"Authorization": f"Bearer {TOKEN}"})
        assert chunked.status_code == 413
        wrong = http.put(url, content=big, headers={"Authorization": "Bearer not-the-token-at-all"})
        assert wrong.status_code == 403 and wrong.json() == {"error": "admin API: this token is not accepted"}
        missing = http.put(url, json={"version": 1})
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        ok = http.put(url, json={"version": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, ok.text

"""`OneWriteHttpToolsProtocol` on a recording transport: each answer's head and body leave in one
write, and what needs the head alone (a HEAD answer, a stream's later chunks, `100 Continue`)
still gets exactly the bytes stock uvicorn writes; `answer` (the inference lane) writes a whole
response at once."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from server.api.http_protocol import OneWriteCycle, OneWriteHttpToolsProtocol
from tests.fakes import until

BODY = b'{"ok": true}'
DATE = (b"date", b"Thu, 03 Dec 2026 12:00:00 GMT")


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    request = await receive()
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": False})
        return
    body = BODY if scope["path"] != "/echo" else request.get("body", b"")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def exchange(raw: bytes, asgi_app: ASGIApp = app) -> RecordingTransport:
    """Feed `raw` to a fresh connection and wait until every request's task has finished."""
    config = Config(asgi_app, lifespan="off", server_header=False, access_log=False)
    state = ServerState()
    state.default_headers = [DATE]  # what uvicorn's server keeps there (`date`, refreshed each second)
    protocol = OneWriteHttpToolsProtocol(config, state, {}, _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(raw)
    while state.tasks:
        await asyncio.gather(*state.tasks)
    protocol.connection_lost(None)
    return transport


async def test_a_response_head_and_body_leave_in_one_write() -> None:
    transport = await exchange(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")

    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 12" in head
    assert b"server:" not in head.lower()
    assert body == BODY


async def test_keep_alive_requests_each_get_one_write_in_order() -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    transport = await exchange(raw + raw.replace(b"abc", b"xyz"))

    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"\r\n\r\nabc")
    assert transport.writes[1].endswith(b"\r\n\r\nxyz")


async def test_a_head_request_gets_the_head_alone() -> None:
    transport = await exchange(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n")

    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"content-length: 12\r\n\r\n")


async def test_a_stream_sends_its_head_with_the_first_chunk_then_each_chunk() -> None:
    transport = await exchange(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")

    assert len(transport.writes) == 2
    assert b"transfer-encoding: chunked" in transport.writes[0]
    assert transport.writes[0].endswith(b"\r\n\r\n3\r\none\r\n")
    assert transport.writes[1] == b"3\r\ntwo\r\n0\r\n\r\n"


async def test_expect_100_continue_is_written_before_the_body_is_read() -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"
    transport = await exchange(raw)

    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(transport.writes) == 2
    assert transport.writes[1].endswith(b"\r\n\r\nabc")


async def test_an_answered_cycle_is_freed_by_reference_counting_alone() -> None:
    """No reference cycle per request: what a request held must not wait for the cyclic GC (a
    bound `send` stored on the cycle once made every request ~3 kB of cyclic garbage)."""
    cycles: list[weakref.ref[Any]] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        cycles.append(weakref.ref(send.__self__))  # type: ignore[attr-defined]
        await app(scope, receive, send)

    raw = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
    gc.collect()
    gc.disable()
    try:
        transport = await exchange(raw + raw, recording)
        assert len(transport.writes) == 2
        assert cycles[0]() is None  # the first request's cycle: replaced by the second, freed
    finally:
        gc.enable()


async def answering(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers as the inference lane does: the whole response in one `answer` call."""
    if scope["type"] != "http":
        return
    await receive()
    cycle = send.__self__  # type: ignore[attr-defined]
    assert isinstance(cycle, OneWriteCycle)
    await cycle.answer(200, [(b"content-type", b"application/json"), (b"content-length", b"12")], BODY)


async def test_answer_writes_status_default_headers_its_headers_and_body_at_once() -> None:
    raw = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    transport = await exchange(raw + raw, answering)

    assert len(transport.writes) == 2  # keep-alive: both requests answered, one write each
    for write in transport.writes:
        head, _, body = write.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK"
        assert lines[1:] == [b"date: " + DATE[1], b"content-type: application/json", b"content-length: 12"]
        assert body == BODY


async def test_answer_to_a_head_request_writes_the_head_alone() -> None:
    transport = await exchange(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n", answering)

    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"content-length: 12\r\n\r\n")


async def test_answer_honours_connection_close() -> None:
    transport = await exchange(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", answering)

    assert len(transport.writes) == 1
    assert b"\r\nconnection: close\r\n" in transport.writes[0]
    assert transport.writes[0].endswith(BODY)
    assert transport.closed


async def test_answer_after_the_response_started_is_refused() -> None:
    refused: list[str] = []

    async def started_then_answered(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        try:
            await send.__self__.answer(200, [(b"content-length", b"0")], b"")  # type: ignore[attr-defined]
        except RuntimeError as error:
            refused.append(str(error))
        await send({"type": "http.response.body", "body": b""})

    transport = await exchange(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", started_then_answered)

    assert refused == ["answer() after the response started"]
    assert len(transport.writes) == 1


async def test_a_cycle_is_alone_only_while_no_other_request_of_its_server_runs() -> None:
    """`OneWriteCycle.alone`: the batcher's hint that no request can join this one's batch."""
    state = ServerState()
    seen: dict[str, bool] = {}
    release = asyncio.Event()

    async def watching(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        seen[scope["path"]] = send.__self__.alone()  # type: ignore[attr-defined]
        if scope["path"] == "/first":
            await release.wait()  # still running when the second request arrives
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config(watching, lifespan="off", server_header=False, access_log=False)
    loop = asyncio.get_running_loop()
    transports = []
    for path in (b"/first", b"/second"):
        protocol = OneWriteHttpToolsProtocol(config, state, {}, _loop=loop)
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        transports.append(transport)
        await until(lambda: len(seen) == len(transports))
    release.set()
    while state.tasks:
        await asyncio.gather(*state.tasks)
    assert seen == {"/first": True, "/second": False}
    assert all(len(t.writes) == 1 for t in transports)

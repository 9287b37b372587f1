"""hotserve's HTTP/2 gRPC transport (`server/grpc_api/h2/`) driven with real bytes: a real gRPC
client (grpc.aio), h2load, and hand-written frames for the edges a client library never sends
(CONTINUATION, windows of a few bytes, RST_STREAM mid-call, a garbage preface, a message over the
limit, frames on idle and closed streams)."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import hpack
import pytest

from server.grpc_api.calls import Context, Metadatum
from server.grpc_api.h2 import wire
from server.grpc_api.h2.rpc import H2Server, Refusal, Route, Service
from server.protocol.proto import inference_pb2 as pb

MAX_MESSAGE = 8 << 20
ECHO, WAIT, FAIL, ADMIN, ALONE = "/t.T/Echo", "/t.T/Wait", "/t.T/Fail", "/t.T/Admin", "/t.T/Alone"


@dataclass
class Handlers:
    """The test's servicer: echo, wait for the test, abort, and what happened to a waiting call."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def echo(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        metadata = dict(context.invocation_metadata() or ())
        context.set_trailing_metadata((("x-echo", str(metadata.get("x-echo", ""))),))
        return pb.ModelInferResponse(id=request.id, raw_output_contents=request.raw_input_contents)

    async def wait(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return pb.ModelInferResponse(id="released")

    async def alone(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return pb.ModelInferResponse(id=str(getattr(context, "alone")))

    async def fail(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no model 'é' here: 100%", (("retry-after", "1"),))


def gate(route: Route, metadata: Sequence[Metadatum]) -> Refusal | None:
    if ("authorization", "Bearer ok") in metadata:
        return None
    return grpc.StatusCode.UNAUTHENTICATED, "a bearer token is needed", (("x-request-id", "refused-1"),)


def routes(handlers: Handlers) -> dict[str, Route]:
    parse, serialize = pb.ModelInferRequest.FromString, pb.ModelInferResponse.SerializeToString
    return {
        ECHO: Route(ECHO, handlers.echo, parse, serialize, False),
        WAIT: Route(WAIT, handlers.wait, parse, serialize, False),
        FAIL: Route(FAIL, handlers.fail, parse, serialize, False),
        ADMIN: Route(ADMIN, handlers.echo, parse, serialize, True),
        ALONE: Route(ALONE, handlers.alone, parse, serialize, False),
    }


@dataclass
class Served:
    server: H2Server
    port: int
    handlers: Handlers


async def serve(max_streams: int = 64) -> Served:
    handlers = Handlers()
    server = H2Server(Service(routes(handlers), MAX_MESSAGE, gate, max_streams))
    return Served(server, await server.start("127.0.0.1", 0), handlers)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    served = await serve()
    yield served
    await served.server.stop(0)


def message(payload: bytes = b"hello", request_id: str = "r1") -> bytes:
    return pb.ModelInferRequest(id=request_id, raw_input_contents=[payload]).SerializeToString()


def framed(body: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BL", int(compressed), len(body)) + body


@dataclass
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes


@dataclass
class Answer:
    headers: dict[str, str]
    data: bytes
    trailers: dict[str, str]
    reset: int | None = None

    @property
    def status(self) -> int:
        return int((self.trailers or self.headers)["grpc-status"])

    def response(self) -> pb.ModelInferResponse:
        assert self.data[0] == 0 and struct.unpack(">L", self.data[1:5])[0] == len(self.data) - 5
        return pb.ModelInferResponse.FromString(self.data[5:])


class RawClient:
    """An HTTP/2 client of hand-written frames: HPACK from python-hyper, everything else here."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.goaway: tuple[int, int] | None = None
        self.updates: list[tuple[int, int]] = []
        self.held: list[bytes] | None = None
        """Frames kept to be sent in one write (`send` appends here while it is a list)."""

    @classmethod
    async def connect(cls, port: int, settings: Sequence[tuple[int, int]] = ()) -> RawClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.send(wire.PREFACE + wire.settings(settings))
        return client

    def send(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
        else:
            self.writer.write(data)

    def block(self, path: str = ECHO, extra: Sequence[tuple[str, str]] = (), method: str = "POST") -> bytes:
        return self.encoder.encode(
            [
                (":method", method),
                (":scheme", "http"),
                (":path", path),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *extra,
            ]
        )

    def call(self, stream_id: int, body: bytes | None, path: str = ECHO, extra: Sequence[tuple[str, str]] = ()) -> None:
        """HEADERS, then the framed `body` in DATA frames of at most 16 KiB, the last one ending the stream."""
        block = self.block(path, extra)
        self.send(
            wire.frame(wire.HEADERS, wire.END_HEADERS | (wire.END_STREAM if body is None else 0), stream_id, block)
        )
        if body is not None:
            data = framed(body)
            pieces = [data[i : i + wire.DEFAULT_MAX_FRAME] for i in range(0, len(data), wire.DEFAULT_MAX_FRAME)]
            for index, piece in enumerate(pieces):
                self.send(wire.frame(wire.DATA, wire.END_STREAM if index == len(pieces) - 1 else 0, stream_id, piece))

    async def frame(self) -> Frame | None:
        try:
            head = await self.reader.readexactly(9)
        except asyncio.IncompleteReadError:
            return None
        high, low, kind, flags, stream_id = wire.FRAME_HEADER.unpack(head)
        payload = await self.reader.readexactly(high << 16 | low)
        if kind == wire.SETTINGS and not flags & wire.ACK:
            self.send(wire.frame(wire.SETTINGS, wire.ACK, 0))
        if kind == wire.GOAWAY:
            self.goaway = struct.unpack(">LL", payload[:8])
        if kind == wire.WINDOW_UPDATE:
            self.updates.append((stream_id & 0x7FFFFFFF, struct.unpack(">L", payload)[0]))
        return Frame(kind, flags, stream_id & 0x7FFFFFFF, payload)

    async def answer(self, stream_id: int) -> Answer:
        """Read until the stream ends (its trailers, or an RST_STREAM)."""
        answer = Answer({}, b"", {})
        while True:
            frame = await self.frame()
            assert frame is not None, "connection closed before the answer ended"
            if frame.stream_id != stream_id:
                continue
            if frame.kind == wire.HEADERS:
                fields = {k: v for k, v in self.decoder.decode(frame.payload)}
                if not answer.headers:
                    answer.headers = fields
                else:
                    answer.trailers = fields
                if frame.flags & wire.END_STREAM:
                    return answer
            elif frame.kind == wire.DATA:
                answer.data += frame.payload
            elif frame.kind == wire.RST_STREAM:
                answer.reset = struct.unpack(">L", frame.payload)[0]
                return answer

    async def until(self, kind: int, stream_id: int | None = None) -> tuple[Frame, list[Frame]]:
        """The next frame of `kind` (on `stream_id` if given), and every frame read before it."""
        before: list[Frame] = []
        while True:
            frame = await self.frame()
            assert frame is not None, f"connection closed before a frame of type {kind}"
            if frame.kind == kind and (stream_id is None or frame.stream_id == stream_id):
                return frame, before
            before.append(frame)

    async def closed(self) -> list[Frame]:
        frames = []
        while (frame := await self.frame()) is not None:
            frames.append(frame)
        return frames

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_a_grpc_client_calls_with_metadata_and_messages_over_the_windows(served: Served) -> None:
    request_bytes = bytes(range(256)) * (3 * 4096)  # 3 MiB each way: WINDOW_UPDATE both ways
    async with (
        grpc.aio.insecure_channel(
            f"127.0.0.1:{served.port}", options=[("grpc.max_receive_message_length", MAX_MESSAGE)]
        ) as channel,
        asyncio.timeout(60),
    ):
        echo = channel.unary_unary(
            ECHO,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        calls = [
            echo(
                pb.ModelInferRequest(id=f"c{i}", raw_input_contents=[request_bytes[: 1000 * i]]),
                metadata=(("x-echo", f"m{i}"),),
                timeout=30,
            )
            for i in range(20)
        ]
        answers = await asyncio.gather(*(call for call in calls))
        assert [a.id for a in answers] == [f"c{i}" for i in range(20)]
        assert [a.raw_output_contents[0] for a in answers] == [request_bytes[: 1000 * i] for i in range(20)]
        assert [dict(await call.trailing_metadata() or ())["x-echo"] for call in calls] == [f"m{i}" for i in range(20)]
        big = await echo(pb.ModelInferRequest(id="big", raw_input_contents=[request_bytes]))
        assert big.raw_output_contents[0] == request_bytes
        for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):  # grpc-encoding, inflated
            packed = await echo(
                pb.ModelInferRequest(id="z", raw_input_contents=[bytes(50_000)]), compression=compression
            )
            assert packed.raw_output_contents[0] == bytes(50_000)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary(FAIL, request_serializer=pb.ModelInferRequest.SerializeToString)(
                pb.ModelInferRequest()
            )
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert failed.value.details() == "no model 'é' here: 100%"  # percent-encoded on the wire
        assert dict(failed.value.trailing_metadata() or ())["retry-after"] == "1"
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await channel.unary_unary("/t.T/Nope", request_serializer=pb.ModelInferRequest.SerializeToString)(
                pb.ModelInferRequest()
            )
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await channel.unary_unary(WAIT, request_serializer=pb.ModelInferRequest.SerializeToString)(
                pb.ModelInferRequest(), timeout=0.2
            )
        assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await served.handlers.cancelled.wait()  # the handler was cancelled, as grpc.aio does


async def test_a_call_is_alone_unless_others_were_read_with_it(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.call(1, message(), path=ALONE)
        assert (await client.answer(1)).response().id == "True"  # the batcher need not wait for company
        client.held = []
        client.call(3, message(), path=ALONE)
        client.call(5, message(), path=ALONE)
        together, client.held = b"".join(client.held), None
        client.send(together)  # both calls in one write: read, and started, in the same turn
        assert [(await client.answer(n)).response().id for n in (3, 5)] == ["False", "False"]
    await client.close()


async def test_a_compressed_message_is_inflated_and_an_unknown_encoding_is_unimplemented(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        compressed = gzip.compress(message(b"z" * 5000))
        block = client.block(extra=[("grpc-encoding", "gzip")])
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS, 1, block))
        client.send(wire.frame(wire.DATA, wire.END_STREAM, 1, framed(compressed, compressed=True)))
        answer = await client.answer(1)
        assert answer.status == 0 and answer.response().raw_output_contents[0] == b"z" * 5000
        client.call(3, message(), extra=[("grpc-encoding", "br")])
        refused = await client.answer(3)
        assert refused.status == grpc.StatusCode.UNIMPLEMENTED.value[0] and refused.data == b""
        assert refused.headers["grpc-accept-encoding"] == "identity,deflate,gzip"
    await client.close()


async def test_a_header_block_in_continuation_frames_and_a_ping(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        block = client.block(extra=[("x-echo", "continued"), ("x-long", "v" * 3000)])
        third = len(block) // 3
        client.send(wire.frame(wire.HEADERS, 0, 1, block[:third]))
        client.send(wire.frame(wire.CONTINUATION, 0, 1, block[third : 2 * third]))
        client.send(wire.frame(wire.CONTINUATION, wire.END_HEADERS, 1, block[2 * third :]))
        client.send(wire.frame(wire.DATA, wire.END_STREAM, 1, framed(message())))
        answer = await client.answer(1)
        assert answer.headers[":status"] == "200" and answer.headers["content-type"] == "application/grpc"
        assert answer.trailers == {"grpc-status": "0", "x-echo": "continued"}
        assert answer.response().id == "r1"
        client.send(wire.frame(wire.PING, 0, 0, b"12345678"))
        ping, _ = await client.until(wire.PING)
        assert (ping.flags, ping.payload) == (wire.ACK, b"12345678")
        client.send(wire.frame(wire.HEADERS, 0, 3, client.block()))  # a header block interrupted: a connection error
        client.send(wire.frame(wire.PING, 0, 0, b"12345678"))
        await client.closed()
        assert client.goaway == (1, wire.PROTOCOL_ERROR)  # stream 3 never began
    await client.close()


async def test_repeated_and_changed_header_blocks_decode_to_their_own_fields(served: Served) -> None:
    client = await RawClient.connect(served.port)
    values = ["a", "a", "b", "a", "a", "c" * 200, "a"]  # indexed repeats, insertions, an eviction-free change
    async with asyncio.timeout(30):
        for index, value in enumerate(values):
            client.call(2 * index + 1, message(), extra=[("x-echo", value)])
            assert (await client.answer(2 * index + 1)).trailers["x-echo"] == value
        # A block of only a table size update: no :method or :path, a stream error.
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, 99, b"\x3f\xe1\x1f"))
        assert (await client.answer(99)).reset == wire.PROTOCOL_ERROR
        client.call(101, message(), extra=[("x-echo", "a")])
        assert (await client.answer(101)).trailers["x-echo"] == "a"
    await client.close()


async def test_an_answer_waits_for_the_peers_stream_and_connection_windows(served: Served) -> None:
    client = await RawClient.connect(served.port, [(wire.SETTINGS_INITIAL_WINDOW_SIZE, 1000)])
    async with asyncio.timeout(30):
        payload = bytes(range(256)) * 12  # 3,072 bytes: more than the stream window of 1,000
        client.call(1, message(payload))
        _, before = await client.until(wire.HEADERS, 1)
        client.send(wire.frame(wire.PING, 0, 0, b"pingpong"))
        _, between = await client.until(wire.PING)  # what the server sent before the ACK
        early = b"".join(f.payload for f in between if f.kind == wire.DATA and f.stream_id == 1)
        assert len(early) == 1000 and not [f for f in between if f.kind == wire.HEADERS]
        client.send(wire.window_update(1, 1 << 20))
        answer = await client.answer(1)
        answer.data = early + answer.data
        first = len(answer.data)
        assert answer.status == 0 and answer.response().raw_output_contents[0] == payload
        # The connection's window (65,535, never raised here) holds a 100 KiB answer back too.
        client.send(wire.settings([(wire.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]))
        large = bytes(100 * 1024)
        client.call(3, message(large))
        await client.until(wire.HEADERS, 3)
        client.send(wire.frame(wire.PING, 0, 0, b"pingpong"))
        _, between = await client.until(wire.PING)
        early = b"".join(f.payload for f in between if f.kind == wire.DATA and f.stream_id == 3)
        assert len(early) == wire.DEFAULT_WINDOW - first  # what the first answer left of the connection window
        client.send(wire.window_update(0, 1 << 20))
        answer = await client.answer(3)
        answer.data = early + answer.data
        assert answer.status == 0 and answer.response().raw_output_contents[0] == large
    await client.close()


async def test_a_large_request_gets_its_stream_window_back_as_it_arrives(served: Served) -> None:
    client = await RawClient.connect(served.port, [(wire.SETTINGS_INITIAL_WINDOW_SIZE, wire.MAX_WINDOW)])
    client.send(wire.window_update(0, wire.MAX_WINDOW - wire.DEFAULT_WINDOW))
    async with asyncio.timeout(30):
        body = message(bytes(3 << 20))  # three times the stream window the server announces
        client.call(1, body)
        answer = await client.answer(1)
        assert answer.status == 0 and len(answer.response().raw_output_contents[0]) == 3 << 20
        given_back = sum(increment for stream_id, increment in client.updates if stream_id == 1)
        assert given_back >= len(framed(body)) - (1 << 20)  # the rest fitted the initial window
    await client.close()


async def test_rst_stream_from_the_client_cancels_the_call(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.call(1, message(), path=WAIT)
        await served.handlers.entered.wait()
        client.send(wire.rst_stream(1, wire.CANCEL))
        await served.handlers.cancelled.wait()
        client.call(3, message())  # the connection goes on
        assert (await client.answer(3)).status == 0
    await client.close()


async def test_grpc_timeout_ends_the_call_deadline_exceeded_and_cancels_it(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.call(1, message(), path=WAIT, extra=[("grpc-timeout", "50m")])
        answer = await client.answer(1)
        assert answer.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and answer.data == b""
        await served.handlers.cancelled.wait()
        client.call(3, message(), extra=[("grpc-timeout", "soon")])
        assert (await client.answer(3)).status == grpc.StatusCode.INTERNAL.value[0]
    await client.close()


async def test_a_declared_length_over_the_limit_is_refused_before_the_message_arrives(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS, 1, client.block()))
        client.send(wire.frame(wire.DATA, 0, 1, struct.pack(">BL", 0, MAX_MESSAGE + 1)))
        answer = await client.answer(1)
        assert answer.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert (
            answer.headers["grpc-message"] == f"Received message larger than max ({MAX_MESSAGE + 1} vs. {MAX_MESSAGE})"
        )
        reset, _ = await client.until(wire.RST_STREAM, 1)
        assert struct.unpack(">L", reset.payload)[0] == wire.NO_ERROR
        client.send(wire.frame(wire.DATA, wire.END_STREAM, 1, bytes(16384)))  # late bytes: dropped
        client.call(3, message())
        assert (await client.answer(3)).status == 0
    await client.close()


async def test_requests_that_are_not_grpc_get_the_http_answers_of_grpc_servers(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, 1, client.block(method="GET")))
        assert (await client.answer(1)).headers[":status"] == "405"
        block = client.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", ECHO),
                (":authority", "x"),
                ("content-type", "text/plain"),
            ]
        )
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, 3, block))
        assert (await client.answer(3)).headers[":status"] == "415"
        client.call(5, message(), path="/t.T/Nope")
        assert (await client.answer(5)).status == grpc.StatusCode.UNIMPLEMENTED.value[0]
        client.call(7, None)  # no message at all
        assert (await client.answer(7)).status == grpc.StatusCode.INTERNAL.value[0]
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS, 9, client.block()))
        client.send(wire.frame(wire.DATA, wire.END_STREAM, 9, b"\x00\x00\x00\x00\x09\x0a\xff"))  # cut short
        assert (await client.answer(9)).status == grpc.StatusCode.INTERNAL.value[0]
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS, 11, client.block()))
        client.send(wire.frame(wire.DATA, wire.END_STREAM, 11, framed(b"\xff\xff\xff")))  # not a message
        undecodable = await client.answer(11)
        assert undecodable.status == grpc.StatusCode.INTERNAL.value[0]
    await client.close()


async def test_an_admin_call_is_refused_from_its_headers_and_its_data_dropped(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS, 1, client.block(ADMIN)))
        refused = await client.answer(1)
        assert refused.status == grpc.StatusCode.UNAUTHENTICATED.value[0] and refused.data == b""
        assert refused.headers["x-request-id"] == "refused-1"
        for _ in range(8):  # 128 KiB the client had in flight: dropped, the connection window given back
            client.send(wire.frame(wire.DATA, 0, 1, bytes(16384)))
        client.call(3, message(), path=ADMIN, extra=[("authorization", "Bearer ok")])
        assert (await client.answer(3)).status == 0
    await client.close()


async def test_streams_beyond_max_concurrent_streams_are_refused() -> None:
    served = await serve(max_streams=1)
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.call(1, message(), path=WAIT)
        await served.handlers.entered.wait()
        client.call(3, message())
        reset, _ = await client.until(wire.RST_STREAM, 3)
        assert struct.unpack(">L", reset.payload)[0] == wire.REFUSED_STREAM
        served.handlers.release.set()
        assert (await client.answer(1)).response().id == "released"
    await client.close()
    await served.server.stop(0)


@pytest.mark.parametrize(
    "frames, code",
    [
        ([wire.frame(wire.DATA, 0, 5, b"x")], wire.PROTOCOL_ERROR),  # DATA on an idle stream
        ([wire.frame(wire.CONTINUATION, wire.END_HEADERS, 1, b"")], wire.PROTOCOL_ERROR),
        ([wire.frame(wire.PING, 0, 0, b"short")], wire.FRAME_SIZE_ERROR),
        ([wire.frame(wire.HEADERS, wire.END_HEADERS, 2, b"")], wire.PROTOCOL_ERROR),  # an even stream
        ([wire.frame(wire.HEADERS, wire.END_HEADERS, 1, b"\xff\xff\xff\xff")], wire.COMPRESSION_ERROR),
        ([wire.window_update(0, 0)], wire.PROTOCOL_ERROR),
        ([wire.window_update(0, wire.MAX_WINDOW)], wire.FLOW_CONTROL_ERROR),
        ([wire.settings([(wire.SETTINGS_MAX_FRAME_SIZE, 10)])], wire.PROTOCOL_ERROR),
        ([wire.frame(wire.PUSH_PROMISE, 0, 1, bytes(4))], wire.PROTOCOL_ERROR),
        ([wire.FRAME_HEADER.pack(0, 20000, wire.DATA, 0, 1)], wire.FRAME_SIZE_ERROR),
    ],
    ids=[
        "idle-data",
        "stray-continuation",
        "short-ping",
        "even-stream",
        "bad-hpack",
        "zero-window",
        "window-overflow",
        "frame-size",
        "push",
        "oversized-frame",
    ],
)
async def test_protocol_errors_end_the_connection_with_goaway_and_their_code(
    served: Served, frames: list[bytes], code: int
) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        for data in frames:
            client.send(data)
        await client.closed()
        assert client.goaway is not None and client.goaway[1] == code
    await client.close()


async def test_unknown_frames_and_priority_are_ignored(served: Served) -> None:
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.send(wire.frame(0xFA, 0, 0, b"extension"))
        client.send(wire.frame(wire.PRIORITY, 0, 1, bytes(5)))
        block = client.block()
        padded = bytes((4,)) + bytes(5) + block + bytes(4)  # PADDED and PRIORITY flags on HEADERS
        client.send(wire.frame(wire.HEADERS, wire.END_HEADERS | wire.PADDED | wire.PRIORITY_FLAG, 1, padded))
        body = framed(message())
        client.send(wire.frame(wire.DATA, wire.END_STREAM | wire.PADDED, 1, bytes((3,)) + body + bytes(3)))
        assert (await client.answer(1)).response().id == "r1"
    await client.close()


async def test_a_garbage_preface_is_answered_with_goaway() -> None:
    served = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    client = RawClient(reader, writer)
    async with asyncio.timeout(30):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        frames = await client.closed()
        assert frames[0].kind == wire.SETTINGS and client.goaway == (0, wire.PROTOCOL_ERROR)
    await client.close()
    await served.server.stop(0)


async def test_stop_sends_goaway_and_lets_the_open_call_finish() -> None:
    served = await serve()
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.call(1, message(), path=WAIT)
        await served.handlers.entered.wait()
        stopping = asyncio.ensure_future(served.server.stop(30))
        await client.until(wire.GOAWAY)
        assert client.goaway == (1, wire.NO_ERROR)
        client.call(3, message())  # after GOAWAY: refused
        reset, _ = await client.until(wire.RST_STREAM, 3)
        assert struct.unpack(">L", reset.payload)[0] == wire.REFUSED_STREAM
        served.handlers.release.set()
        assert (await client.answer(1)).response().id == "released"
        await stopping
        await client.closed()
    await client.close()


async def test_stop_cancels_the_calls_still_open_after_the_grace() -> None:
    served = await serve()
    client = await RawClient.connect(served.port)
    async with asyncio.timeout(30):
        client.call(1, message(), path=WAIT)
        await served.handlers.entered.wait()
        await served.server.stop(0)
        await served.handlers.cancelled.wait()
        await client.closed()
    await client.close()


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
async def test_h2load_calls_concurrently_on_many_streams(served: Served, tmp_path: Any) -> None:
    body = tmp_path / "body"
    body.write_bytes(framed(message(b"q" * 4000)))
    process = await asyncio.create_subprocess_exec(
        "h2load",
        "-n",
        "400",
        "-c",
        "4",
        "-m",
        "8",
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://127.0.0.1:{served.port}{ECHO}",
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert "400 succeeded, 0 failed, 0 errored" in out.decode(), out.decode()

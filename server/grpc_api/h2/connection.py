"""One HTTP/2 connection carrying unary gRPC calls: an `asyncio.Protocol` on the event loop.

RFC 9113 as a gRPC server needs it: the connection preface, SETTINGS both ways (and their ACK),
PING ACK, WINDOW_UPDATE both ways (inbound windows given back as the bytes are taken; outbound,
the peer's connection and stream windows respected, an answer that does not fit waiting for its
WINDOW_UPDATE), HEADERS with CONTINUATION, PADDED and PRIORITY flags, PRIORITY frames and unknown
frame types ignored, RST_STREAM from the client cancelling its call, MAX_CONCURRENT_STREAMS
(REFUSED_STREAM beyond it), a bound on the header list, and protocol errors answered with GOAWAY
and the code the RFC names before the connection is closed.

gRPC over it (the "gRPC over HTTP2" spec): POST with `content-type: application/grpc[+proto]`
(HTTP 405 / 415 otherwise, as gRPC servers answer), the path names the method (UNIMPLEMENTED when
unknown), `grpc-timeout` starts the call's deadline, `grpc-encoding` gzip or deflate for a
compressed message (UNIMPLEMENTED for another), one length-prefixed message whose declared length
is checked against the message limit before any of it is kept. The call starts when its stream
ends; calls completed in one `data_received` are started in that turn, so concurrent calls reach
the batcher together.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import struct
import time
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

import grpc
from hpack.exceptions import HPACKError, OversizedHeaderListError

from server.grpc_api.h2 import wire
from server.grpc_api.h2.hpack_decode import HpackDecoder

if TYPE_CHECKING:
    from server.grpc_api.h2.rpc import Route, Service

logger = logging.getLogger(__name__)

MAX_HEADER_LIST: Final = 16_384
"""SETTINGS_MAX_HEADER_LIST_SIZE (RFC 7541's size: names, values and 32 bytes a field): larger is
a connection error (ENHANCE_YOUR_CALM), since the HPACK state cannot be kept past it."""
MAX_HEADER_BLOCK: Final = 2 * MAX_HEADER_LIST
"""The compressed block (HEADERS and its CONTINUATIONs) kept at most while it arrives."""
HEADER_CACHE: Final = 32
"""Distinct header blocks remembered per connection (a client that varies a field per call, such as
grpc-timeout, sends a new block each time: the cache is emptied when full)."""
STREAM_WINDOW: Final = 1 << 20
"""SETTINGS_INITIAL_WINDOW_SIZE: what a client may send on one call before it is given more."""
CONNECTION_WINDOW: Final = 1 << 24
"""The connection's receive window (raised from 65,535 by the first WINDOW_UPDATE)."""
GRPC_CONTENT_TYPES: Final = (b"application/grpc", b"application/grpc+proto")
ENCODINGS: Final = {b"identity": 0, b"gzip": 31, b"deflate": 15}
"""grpc-encoding -> zlib's wbits (gzip: a gzip header; deflate: zlib's)."""
ACCEPT_ENCODING: Final = ("grpc-accept-encoding", "identity,deflate,gzip")
_TIMEOUT: Final = re.compile(rb"(\d{1,8})([HMSmun])")
_TIMEOUT_UNIT: Final = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_PREFIX: Final = struct.Struct(">BL")
_SETTING: Final = struct.Struct(">HL")
_U32: Final = struct.Struct(">L")
_FRAME_HEADER: Final = wire.FRAME_HEADER


class ConnectionError_(Exception):
    """A connection error (RFC 9113 section 5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: int, debug: str) -> None:
        super().__init__(debug)
        self.code = code
        self.debug = debug


class Stream:
    """One call: its route, metadata, deadline, the request as it arrives and the answer as it leaves."""

    __slots__ = (
        "id",
        "route",
        "metadata",
        "deadline",
        "wbits",
        "timer",
        "task",
        "buffer",
        "message",
        "remote_closed",
        "answered",
        "expired",
        "recv_window",
        "send_window",
        "pending",
        "tail",
    )

    def __init__(self, stream_id: int, route: Route, metadata: list[tuple[str, str | bytes]], send_window: int) -> None:
        self.id = stream_id
        self.route = route
        self.metadata = metadata
        self.deadline: float | None = None
        self.wbits = 0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.buffer: bytearray | None = None
        self.message: bytes | None = None
        self.remote_closed = False
        self.answered = False
        self.expired = False
        self.recv_window = STREAM_WINDOW
        self.send_window = send_window
        self.pending = b""
        """DATA not yet sent for want of window; then `tail` (trailers, maybe RST_STREAM)."""
        self.tail = b""


class H2Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._routes = service.routes
        self._max_message = service.max_message_bytes
        self._max_streams = service.max_concurrent_streams
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._decoder = HpackDecoder(max_header_list_size=MAX_HEADER_LIST)
        self._cache: dict[bytes, list[tuple[bytes, bytes]]] = {}
        """Header blocks decoded since the dynamic table last changed (see `_decode`)."""
        self._cached_version = 0
        self._buffer = bytearray()
        self._preface = True
        """Still waiting for the client's preface (then its first SETTINGS)."""
        self._settings_seen = False
        self._streams: dict[int, Stream] = {}
        self._blocked: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._headers_in: tuple[int, bool, bytearray] | None = None
        """A header block still waiting for CONTINUATION: stream id, END_STREAM, bytes so far."""
        self._recv_window = CONNECTION_WINDOW
        self._consumed = 0
        self._send_window = wire.DEFAULT_WINDOW
        self._peer_initial_window = wire.DEFAULT_WINDOW
        self._peer_max_frame = wire.DEFAULT_MAX_FRAME
        self._out: list[bytes] = []
        """Frames to send at the end of this `data_received` (one write)."""
        self._receiving = False
        self._going_away = False
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self._service.connections.add(self)
        self._transport.write(
            wire.settings(
                (
                    (wire.SETTINGS_MAX_CONCURRENT_STREAMS, self._max_streams),
                    (wire.SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                    (wire.SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
                )
            )
            + wire.window_update(0, CONNECTION_WINDOW - wire.DEFAULT_WINDOW)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._service.connections.discard(self)
        for stream in list(self._streams.values()):
            self._drop(stream)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        self._receiving = True
        try:
            used = self._frames(data)
        except ConnectionError_ as error:
            self._fail(error.code, error.debug)
            return
        except Exception:  # a fault of this module: the connection ends, the server goes on
            logger.exception("HTTP/2 connection failed")
            self._fail(wire.INTERNAL_ERROR, "internal error")
            return
        finally:
            self._receiving = False
        if used < len(data):
            self._buffer += data[used:]
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # close: a half-closed client cannot be answered on HTTP/2

    # frames in

    def _frames(self, data: bytes) -> int:
        """Handle every whole frame in `data`; the count of bytes used."""
        pos = 0
        end = len(data)
        if self._preface:
            if end < len(wire.PREFACE):
                if not wire.PREFACE.startswith(data):
                    raise ConnectionError_(wire.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return 0
            if not data.startswith(wire.PREFACE):
                raise ConnectionError_(wire.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            pos = len(wire.PREFACE)
            self._preface = False
        while end - pos >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
            length = high << 16 | low
            if length > wire.DEFAULT_MAX_FRAME:
                raise ConnectionError_(wire.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos - 9 < length:
                break
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            stream_id &= 0x7FFFFFFF
            if self._headers_in is not None and kind != wire.CONTINUATION:
                raise ConnectionError_(wire.PROTOCOL_ERROR, "a header block interrupted")
            if not self._settings_seen and (kind != wire.SETTINGS or flags & wire.ACK):
                raise ConnectionError_(wire.PROTOCOL_ERROR, "the preface's SETTINGS missing")
            if kind == wire.DATA:
                self._on_data(stream_id, flags, payload)
            elif kind == wire.HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif kind == wire.CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif kind == wire.SETTINGS:
                self._on_settings(stream_id, flags, payload)
            elif kind == wire.WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == wire.PING:
                if stream_id != 0:
                    raise ConnectionError_(wire.PROTOCOL_ERROR, "PING on a stream")
                if length != 8:
                    raise ConnectionError_(wire.FRAME_SIZE_ERROR, "PING not of 8 bytes")
                if not flags & wire.ACK:
                    self._out.append(wire.frame(wire.PING, wire.ACK, 0, payload))
            elif kind == wire.RST_STREAM:
                self._on_rst_stream(stream_id, payload)
            elif kind == wire.PRIORITY:
                if stream_id == 0:
                    raise ConnectionError_(wire.PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    self._reset(stream_id, wire.FRAME_SIZE_ERROR)
            elif kind == wire.GOAWAY:
                self._going_away = True
                if not self._streams:
                    self._close()
            elif kind == wire.PUSH_PROMISE:
                raise ConnectionError_(wire.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # other frame types: ignored (RFC 9113 section 5.5)
        return pos

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError_(wire.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & wire.ACK:
            if payload:
                raise ConnectionError_(wire.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(wire.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        self._settings_seen = True
        for key, value in _SETTING.iter_unpack(payload):
            if key == wire.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > wire.MAX_WINDOW:
                    raise ConnectionError_(wire.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > wire.MAX_WINDOW:
                        raise ConnectionError_(wire.FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif key == wire.SETTINGS_MAX_FRAME_SIZE:
                if not wire.DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise ConnectionError_(wire.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
            elif key == wire.SETTINGS_ENABLE_PUSH and value > 1:
                raise ConnectionError_(wire.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            # HEADER_TABLE_SIZE: answers use no dynamic table; the rest bind the client's side.
        self._out.append(wire.frame(wire.SETTINGS, wire.ACK, 0))
        if self._blocked:
            self._unblock()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(wire.FRAME_SIZE_ERROR, "WINDOW_UPDATE not of 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ConnectionError_(wire.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > wire.MAX_WINDOW:
                raise ConnectionError_(wire.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                if stream_id > self._last_stream_id:
                    raise ConnectionError_(wire.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
                return
            if increment == 0:
                self._reset(stream_id, wire.PROTOCOL_ERROR)
                self._drop(stream)
                return
            stream.send_window += increment
            if stream.send_window > wire.MAX_WINDOW:
                self._reset(stream_id, wire.FLOW_CONTROL_ERROR)
                self._drop(stream)
                return
        if self._blocked:
            self._unblock()

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(wire.FRAME_SIZE_ERROR, "RST_STREAM not of 4 bytes")
        if stream_id == 0 or stream_id > self._last_stream_id:
            raise ConnectionError_(wire.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._drop(stream)  # the client cancelled: so is the call

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0 or not stream_id & 1:
            raise ConnectionError_(wire.PROTOCOL_ERROR, "HEADERS on stream 0 or an even stream")
        start, stop = 0, len(payload)
        if flags & wire.PADDED:
            if not payload:
                raise ConnectionError_(wire.PROTOCOL_ERROR, "PADDED HEADERS without a pad length")
            start, stop = 1, stop - payload[0]
        if flags & wire.PRIORITY_FLAG:
            start += 5
        if stop < start:
            raise ConnectionError_(wire.PROTOCOL_ERROR, "padding longer than the HEADERS payload")
        block = payload[start:stop] if start or stop < len(payload) else payload
        end_stream = bool(flags & wire.END_STREAM)
        if flags & wire.END_HEADERS:
            self._on_header_block(stream_id, end_stream, block)
        else:
            self._headers_in = (stream_id, end_stream, bytearray(block))

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self._headers_in is None or self._headers_in[0] != stream_id:
            raise ConnectionError_(wire.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        block = self._headers_in[2]
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise ConnectionError_(wire.ENHANCE_YOUR_CALM, f"header block over {MAX_HEADER_BLOCK} bytes")
        if flags & wire.END_HEADERS:
            end_stream = self._headers_in[1]
            self._headers_in = None
            self._on_header_block(stream_id, end_stream, bytes(block))

    def _on_header_block(self, stream_id: int, end_stream: bool, block: bytes) -> None:
        try:
            headers = self._decode(block)
        except OversizedHeaderListError as error:
            raise ConnectionError_(wire.ENHANCE_YOUR_CALM, f"header list over {MAX_HEADER_LIST} bytes") from error
        except HPACKError as error:
            raise ConnectionError_(wire.COMPRESSION_ERROR, f"HPACK: {error}") from error
        stream = self._streams.get(stream_id)
        if stream is not None:  # the client's trailers: they end its stream
            if stream.remote_closed or not end_stream:
                self._reset(stream_id, wire.PROTOCOL_ERROR if not stream.remote_closed else wire.STREAM_CLOSED)
                self._drop(stream)
            else:
                self._end_of_request(stream)
            return
        if stream_id <= self._last_stream_id:
            return  # a stream already closed (the client may not have seen its RST_STREAM yet)
        self._last_stream_id = stream_id
        if self._going_away or len(self._streams) >= self._max_streams:
            self._out.append(wire.rst_stream(stream_id, wire.REFUSED_STREAM))
            return
        self._open(stream_id, end_stream, headers)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """HPACK-decode `block`; a block seen since the dynamic table last changed is not decoded again.

        A client repeating a call sends the same bytes (its fields indexed in the table), and
        decoding them leaves the table as it was. A block that changed the table is never
        replayed: decoding it again would change it again.
        """
        decoder = self._decoder
        version = decoder.version
        if version != self._cached_version:
            self._cache.clear()
            self._cached_version = version
        else:
            found = self._cache.get(block)
            if found is not None:
                return found
        headers = decoder.decode(block)
        if decoder.version == version:
            if len(self._cache) >= HEADER_CACHE:
                self._cache.clear()
            self._cache[block] = headers
        return headers

    def _open(self, stream_id: int, end_stream: bool, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """A new call from its request headers: refused at once, or a stream waiting for its message."""
        method = path = content_type = timeout = encoding = None
        metadata: list[tuple[str, str | bytes]] = []
        for name, value in headers:
            if name[:1] == b":":
                if name == b":path":
                    path = value
                elif name == b":method":
                    method = value
                elif name != b":scheme" and name != b":authority":
                    self._out.append(wire.rst_stream(stream_id, wire.PROTOCOL_ERROR))
                    return
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding":
                encoding = value
            elif name == b"te" or name == b"grpc-accept-encoding":
                pass
            elif name.endswith(b"-bin"):
                metadata.append((name.decode("latin-1"), _unbase64(value)))
            else:
                metadata.append((name.decode("latin-1"), value.decode("latin-1")))
        if method is None or path is None:
            self._out.append(wire.rst_stream(stream_id, wire.PROTOCOL_ERROR))
            return
        if method != b"POST":  # what gRPC servers answer a request that is not gRPC
            self._refuse(stream_id, end_stream, grpc.StatusCode.INTERNAL, "invalid gRPC request method", status=405)
            return
        if content_type is None or not (
            content_type in GRPC_CONTENT_TYPES
            or content_type.startswith((b"application/grpc;", b"application/grpc+proto;"))
        ):
            shown = "" if content_type is None else content_type.decode("latin-1")
            self._refuse(
                stream_id,
                end_stream,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid gRPC request content-type {shown!r}",
                status=415,
            )
            return
        route = self._routes.get(path)
        if route is None:
            shown = path.decode("latin-1")
            self._refuse(stream_id, end_stream, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {shown}")
            return
        wbits = 0
        if encoding is not None:
            found = ENCODINGS.get(encoding)
            if found is None:
                shown = encoding.decode("latin-1")
                message = f"Compression algorithm {shown!r} is not supported"
                self._refuse(stream_id, end_stream, grpc.StatusCode.UNIMPLEMENTED, message, (ACCEPT_ENCODING,))
                return
            wbits = found
        stream = Stream(stream_id, route, metadata, self._peer_initial_window)
        stream.wbits = wbits
        if timeout is not None:
            match = _TIMEOUT.fullmatch(timeout)
            if match is None:
                self._refuse(stream_id, end_stream, grpc.StatusCode.INTERNAL, "malformed grpc-timeout")
                return
            seconds = int(match.group(1)) * _TIMEOUT_UNIT[match.group(2)]
            stream.deadline = time.monotonic() + seconds
            stream.timer = self._loop.call_later(seconds, self._expire, stream)
        if route.admin:
            refusal = self._service.refuse(route, metadata)
            if refusal is not None:  # before one byte of the message is kept (admin_gate.py)
                if stream.timer is not None:
                    stream.timer.cancel()
                self._refuse(stream_id, end_stream, *refusal)
                return
        self._streams[stream_id] = stream
        if end_stream:
            self._end_of_request(stream)

    def _refuse(
        self,
        stream_id: int,
        end_stream: bool,
        code: grpc.StatusCode,
        message: str,
        metadata: tuple[tuple[str, str], ...] = (),
        status: int = 200,
    ) -> None:
        """Trailers-Only (or an HTTP error status) for a call that never becomes a stream."""
        head = wire.RESPONSE_HEADERS if status == 200 else wire.http_status(status) + wire.CONTENT_TYPE_GRPC
        block = head + wire.trailers(code.value[0], message, metadata)
        self._out.append(wire.header_frames(stream_id, block, True, self._peer_max_frame))
        if not end_stream:
            self._out.append(wire.rst_stream(stream_id, wire.NO_ERROR))

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        length = len(payload)
        self._recv_window -= length
        if self._recv_window < 0:
            raise ConnectionError_(wire.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._consumed += length
        if self._consumed >= CONNECTION_WINDOW // 2:  # given back as taken: kept or dropped
            self._out.append(wire.window_update(0, self._consumed))
            self._recv_window += self._consumed
            self._consumed = 0
        if stream_id == 0:
            raise ConnectionError_(wire.PROTOCOL_ERROR, "DATA on stream 0")
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise ConnectionError_(wire.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a call already answered or refused: its bytes are dropped
        if stream.remote_closed:
            self._out.append(wire.rst_stream(stream_id, wire.STREAM_CLOSED))
            self._drop(stream)
            return
        stream.recv_window -= length
        if stream.recv_window < 0:
            self._out.append(wire.rst_stream(stream_id, wire.FLOW_CONTROL_ERROR))
            self._drop(stream)
            return
        if flags & wire.PADDED:
            if not length or payload[0] >= length:
                raise ConnectionError_(wire.PROTOCOL_ERROR, "padding longer than the DATA payload")
            payload = payload[1 : length - payload[0]]
        if payload and not stream.answered:
            self._take(stream, payload)
        if flags & wire.END_STREAM:
            self._end_of_request(stream)
        elif stream.recv_window < STREAM_WINDOW // 2 and not stream.answered:
            self._out.append(wire.window_update(stream_id, STREAM_WINDOW - stream.recv_window))
            stream.recv_window = STREAM_WINDOW

    def _take(self, stream: Stream, data: bytes) -> None:
        """Gather the call's one length-prefixed message; its declared length is checked first."""
        if stream.message is not None:
            self._fail_call(stream, grpc.StatusCode.INTERNAL, "more than one request message for a unary call")
            return
        buffer = stream.buffer
        if buffer is None:
            if len(data) >= 5:
                size = _PREFIX.unpack_from(data)[1]
                if size > self._max_message:
                    self._too_large(stream, size)
                    return
                if len(data) == 5 + size:  # the whole message in one frame: no copy to a buffer
                    stream.message = data
                    return
            buffer = stream.buffer = bytearray()
        buffer += data
        if len(buffer) < 5:
            return
        size = _PREFIX.unpack_from(buffer)[1]
        if size > self._max_message:
            self._too_large(stream, size)
        elif len(buffer) > 5 + size:
            self._fail_call(stream, grpc.StatusCode.INTERNAL, "more than one request message for a unary call")
        elif len(buffer) == 5 + size:
            stream.message = bytes(buffer)
            stream.buffer = None

    def _too_large(self, stream: Stream, size: int) -> None:
        message = f"Received message larger than max ({size} vs. {self._max_message})"
        self._fail_call(stream, grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _fail_call(self, stream: Stream, code: grpc.StatusCode, message: str) -> None:
        stream.buffer = None
        self.answer(stream, None, code.value[0], message, ())

    def _end_of_request(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.answered:
            return
        framed = stream.message
        if framed is None:
            what = "no request message" if stream.buffer is None else "an incomplete request message"
            self._fail_call(stream, grpc.StatusCode.INTERNAL, f"{what} for a unary call")
            return
        stream.message = None
        message = framed[5:]
        if framed[0]:
            if not stream.wbits:
                self._fail_call(stream, grpc.StatusCode.INTERNAL, "a compressed message without grpc-encoding")
                return
            inflater = zlib.decompressobj(stream.wbits)
            try:
                message = inflater.decompress(message, self._max_message + 1)
            except zlib.error:
                self._fail_call(stream, grpc.StatusCode.INTERNAL, "the compressed message could not be inflated")
                return
            if len(message) > self._max_message:
                self._too_large(stream, len(message) + len(inflater.unconsumed_tail))
                return
        service = self._service
        stream.task = task = self._loop.create_task(service.run(self, stream, message))
        service.calls += 1
        task.add_done_callback(service.ended)

    def _expire(self, stream: Stream) -> None:
        """The call's grpc-timeout passed: DEADLINE_EXCEEDED, and its handler cancelled."""
        stream.timer = None
        if stream.answered:
            return
        stream.expired = True
        task = stream.task
        self.answer(stream, None, grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "Deadline Exceeded", ())
        if task is not None:
            task.cancel()

    # answers out

    def answer(
        self, stream: Stream, payload: bytes | None, code: int, message: str, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        """End the call: HEADERS, DATA and trailers in one write (Trailers-Only without `payload`)."""
        if stream.answered:
            return
        stream.answered = True
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if self._transport is None:
            return
        stream_id = stream.id
        max_frame = self._peer_max_frame
        reset = b"" if stream.remote_closed else wire.rst_stream(stream_id, wire.NO_ERROR)
        if payload is None:
            block = wire.RESPONSE_HEADERS + wire.trailers(code, message, metadata)
            self._emit(wire.header_frames(stream_id, block, True, max_frame) + reset)
            self._finish(stream)
            return
        size = len(payload) + 5
        tail = wire.header_frames(stream_id, wire.trailers(code, message, metadata), True, max_frame) + reset
        if size <= self._send_window and size <= stream.send_window and size <= max_frame:
            self._send_window -= size
            head = _FRAME_HEADER.pack(0, len(wire.RESPONSE_HEADERS), wire.HEADERS, wire.END_HEADERS, stream_id)
            data = _FRAME_HEADER.pack(size >> 16, size & 0xFFFF, wire.DATA, 0, stream_id)
            self._emit(b"".join((head, wire.RESPONSE_HEADERS, data, _PREFIX.pack(0, len(payload)), payload, tail)))
            self._finish(stream)
            return
        stream.pending = _PREFIX.pack(0, len(payload)) + payload
        stream.tail = tail
        self._emit(wire.header_frames(stream_id, wire.RESPONSE_HEADERS, False, max_frame) + self._send_pending(stream))

    def _send_pending(self, stream: Stream) -> bytes:
        """As much of the answer's DATA as the windows allow; its trailers once all is sent."""
        out: list[bytes] = []
        pending = stream.pending
        while pending:
            size = min(len(pending), self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                break
            out.append(wire.frame(wire.DATA, 0, stream.id, pending[:size]))
            pending = pending[size:]
            self._send_window -= size
            stream.send_window -= size
        stream.pending = pending
        if pending:
            self._blocked[stream.id] = stream
        else:
            self._blocked.pop(stream.id, None)
            out.append(stream.tail)
            self._finish(stream)
        return b"".join(out)

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                break
            self._out.append(self._send_pending(stream))

    def _emit(self, data: bytes) -> None:
        if self._receiving:
            self._out.append(data)
        elif self._transport is not None:
            self._transport.write(data)

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _finish(self, stream: Stream) -> None:
        self._streams.pop(stream.id, None)
        if self._going_away and not self._streams:
            self._close()

    def _drop(self, stream: Stream) -> None:
        """Forget a stream without answering it (reset by the client or by this side); cancel its call."""
        stream.answered = True
        self._blocked.pop(stream.id, None)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        self._finish(stream)

    def _reset(self, stream_id: int, code: int) -> None:
        self._out.append(wire.rst_stream(stream_id, code))

    # the connection's end

    def _fail(self, code: int, debug: str) -> None:
        """A connection error: GOAWAY with its code, then close (after what is already queued)."""
        logger.debug("HTTP/2 connection error %d: %s", code, debug)
        self._out.append(wire.goaway(self._last_stream_id, code, debug.encode()[:256]))
        self._flush()
        self._close()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def go_away(self) -> None:
        """Graceful shutdown: no new calls (GOAWAY NO_ERROR); the connection closes when its calls end."""
        if self._transport is None:
            return
        self._going_away = True
        self._emit(wire.goaway(self._last_stream_id, wire.NO_ERROR))
        if not self._streams:
            self._close()

    def abort(self) -> None:
        """The grace period is over: cancel the calls still open and close."""
        for stream in list(self._streams.values()):
            self._drop(stream)
        self._close()


def _unbase64(value: bytes) -> bytes:
    return base64.b64decode(value + b"=" * (-len(value) % 4))

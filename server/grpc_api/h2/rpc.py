"""The gRPC calls over hotserve's HTTP/2 connections: routes, the call context, the server.

A call runs the same servicer method grpc.aio runs (`services.py`) with a `CallContext`, the
small part of grpc.aio's `ServicerContext` hotserve uses (`server/grpc_api/calls.py`'s
`Context`): `abort` raises, and the connection answers with the status. The service's gate
(`admin_gate.py`'s `header_gate`) refuses a repository RPC from its headers, before its message
is kept.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

import grpc

from server.grpc_api.calls import Metadatum
from server.grpc_api.h2.connection import H2Connection, Stream

logger = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS = 1024
"""Calls open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS); more are REFUSED_STREAM."""
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]


@dataclass(frozen=True, slots=True)
class Route:
    """One method: its full name, the servicer's coroutine and the messages' codecs."""

    name: str
    handler: Callable[[Any, Any], Awaitable[Any]]
    parse: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]
    admin: bool
    """A repository RPC: refused from its headers without an accepted token."""


class Abort(Exception):
    """`CallContext.abort`: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, str], ...]) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = trailers


class CallContext:
    """What a servicer method sees of its call (the `Context` protocol of `calls.py`)."""

    __slots__ = ("_metadata", "_deadline", "trailers", "alone")

    def __init__(self, metadata: Sequence[Metadatum], deadline: float | None, alone: bool = False) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self.trailers: tuple[tuple[str, str], ...] = ()
        self.alone = alone
        """No other call of this server was read and not yet answered when this one started
        (`InferenceRequest.alone`: the batcher need not wait a loop turn for company)."""

    def invocation_metadata(self) -> Sequence[Metadatum]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str]] = ()
    ) -> NoReturn:
        raise Abort(code, details, tuple(trailing_metadata))

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str]]) -> None:
        self.trailers = tuple(trailing_metadata)


Refusal: TypeAlias = tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]
"""A call refused from its headers: code, message, trailing metadata."""
Gate: TypeAlias = Callable[[Route, Sequence[Metadatum]], Refusal | None]
"""Asked from the headers of a call to an `admin` route, before one byte of its message is kept."""


class Service:
    """What every connection shares: the routes, the limits, the gate, and how a call runs."""

    def __init__(
        self,
        routes: dict[str, Route],
        max_message_bytes: int,
        gate: Gate,
        max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
    ) -> None:
        self.routes = {name.encode(): route for name, route in routes.items()}
        self.max_message_bytes = max_message_bytes
        self.refuse = gate
        self.max_concurrent_streams = max_concurrent_streams
        self.connections: set[H2Connection] = set()
        self.calls = 0
        """Calls started (their message read) and not yet ended, on every connection."""

    def ended(self, task: asyncio.Task[None]) -> None:
        """A call's task is done (answered, failed or cancelled, started or not)."""
        self.calls -= 1

    async def run(self, connection: H2Connection, stream: Stream, message: bytes) -> None:
        """One call, from its message to its answer."""
        route = stream.route
        try:
            request = route.parse(message)
        except Exception:  # noqa: BLE001 - any undecodable message is the client's
            connection.answer(stream, None, _INTERNAL, "Exception deserializing request!", ())
            return
        context = CallContext(stream.metadata, stream.deadline, self.calls == 1)
        try:
            payload = route.serialize(await route.handler(request, context))
        except Abort as abort:
            connection.answer(stream, None, abort.code.value[0], abort.details, abort.trailers)
            return
        except asyncio.CancelledError:
            return  # the client reset the stream, its deadline passed (answered then) or the server stops
        except Exception:
            logger.exception("unhandled error in gRPC %s", route.name)
            connection.answer(stream, None, _INTERNAL, "internal server error", ())
            return
        connection.answer(stream, payload, 0, "", context.trailers)


class H2Server:
    """hotserve's gRPC listener: one `H2Connection` per client connection, on the running loop."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the bound port."""
        loop = asyncio.get_running_loop()
        service = self._service
        self._server = await loop.create_server(lambda: H2Connection(service), host, port, reuse_address=True)
        for sock in self._server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise RuntimeError("the gRPC listener has no TCP socket")

    async def stop(self, grace_s: float) -> None:
        """No new connections or calls (GOAWAY); open calls get up to `grace_s`, then are cancelled."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        connections = list(self._service.connections)
        for connection in connections:
            connection.go_away()
        waiting = [connection.closed for connection in connections if not connection.closed.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, grace_s))
        for connection in list(self._service.connections):
            connection.abort()
        closing = [connection.closed for connection in connections if not connection.closed.done()]
        if closing:
            await asyncio.wait(closing, timeout=1.0)

"""uvicorn's httptools protocol, writing each response's head and body in one write.

Stock uvicorn writes the status line and headers when the app sends `http.response.start`, and
the body when it sends `http.response.body`: two socket writes, two syscalls and two TCP
segments per answer. Here the head is held until the body's first write and goes out with it
(alone, after the send, when no body is written: a HEAD request). Everything else, header
validation and framing included, is uvicorn's own code: only the transport that a response's
cycle writes to is stood in for during its two sends (uvicorn's `send` only writes and closes).
On a bare ASGI app this took the CPU per request from 56 to 43 us at 64 clients.

The inference lane goes further (`answer`): its responses are whole (a Content-Length body in one
piece) and their headers its own, so it hands the cycle status, headers and body in one call,
which writes them at once, without two ASGI messages through uvicorn's general `send` (header
regexes, chunking and Content-Length accounting): 6 us a response less.

Draining (`DrainState`): from SIGTERM on, every answer says `connection: close` and closes its
connection. Otherwise a keep-alive client that has just read an answer sends its next request on
a connection that the shutdown then closes as idle: one request lost per connection
(`python -m load_tests.drain_check`: 32 of 32 connections before this).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from typing import Any, cast

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState


class _HeldHead:
    """The transport during `http.response.start`: keeps what is written (the head)."""

    __slots__ = ("_transport", "head")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.head = b""

    def write(self, data: bytes) -> None:
        self.head += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeadFirst:
    """The transport during the next send: the held head goes out with its first write."""

    __slots__ = ("_transport", "head")

    def __init__(self, transport: Any, head: bytes) -> None:
        self._transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        head = self.head
        if head:
            self.head = b""
            data = head + data
        self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def flush(self) -> None:
        if self.head:
            self._transport.write(self.head)
            self.head = b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteCycle(RequestResponseCycle):
    """A request-response cycle whose head waits for its body."""

    _held: bytes = b""
    _tasks: Sized = ()
    """The server's running request tasks (uvicorn's `server_state.tasks`), this one's among them."""

    def alone(self) -> bool:
        """True when this request's task is the only request task its server runs: no other
        request was read and not yet answered, so none can join its batch in this loop turn."""
        return len(self._tasks) <= 1

    async def send(self, message: ASGISendEvent) -> None:
        transport = self.transport
        if not self.response_started and message["type"] == "http.response.start":
            holder = _HeldHead(transport)
            self.transport = cast(asyncio.Transport, holder)
            try:
                await super().send(message)
            finally:
                self.transport = transport
            self._held = holder.head
            return
        held = self._held
        if not held:
            await super().send(message)
            return
        self._held = b""
        first = _HeadFirst(transport, held)
        self.transport = cast(asyncio.Transport, first)
        try:
            await super().send(message)
        finally:
            self.transport = transport
            if not self.disconnected:
                first.flush()  # nothing was written (a HEAD answer): the head goes alone

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send a whole response (`body` complete, `content-length` among `headers`) in one
        write: what `http.response.start` then `http.response.body` would send, for a caller
        whose header names and values are valid by construction (they are not checked again)."""
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if self.response_started:
            raise RuntimeError("answer() after the response started")
        self.response_started = True
        self.waiting_for_100_continue = False
        scope = self.scope
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )
        content = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            content += (name, b": ", value, b"\r\n")
        for name, value in headers:
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        if scope["method"] != "HEAD":
            content.append(body)
        self.transport.write(b"".join(content))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


class DrainState(ServerState):
    """uvicorn's state shared by a server's connections, with the drain flag they read."""

    def __init__(self) -> None:
        super().__init__()
        self.draining = False

    def drain(self) -> None:
        """From now on every answer closes its connection, those not yet started included."""
        self.draining = True
        for connection in list(self.connections):
            cycle = getattr(connection, "cycle", None)
            # An answer already started told its client keep-alive: closing after it would race.
            if cycle is not None and not cycle.response_started:
                cycle.keep_alive = False


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `OneWriteCycle` for every request."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # Just built, its ASGI task not yet started: its class can still change. (Not a bound
        # `send` stored on the instance: that is a reference cycle per request, left to the
        # cyclic GC: measured, ~3 kB of garbage a request and 5.8% of the loop's time collecting.)
        if type(cycle) is RequestResponseCycle:
            cycle.__class__ = OneWriteCycle
            cast(OneWriteCycle, cycle)._tasks = self.tasks
        state = self.server_state
        if isinstance(state, DrainState) and state.draining:
            cycle.keep_alive = False

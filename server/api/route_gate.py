"""The gate in front of the FastAPI routes (admin, features admin, repository extension, metadata):
credentials first, then a bounded body.

FastAPI reads and parses a route's whole body before its dependencies run, so a token check in a
dependency comes too late: an unauthenticated client could make the server buffer any size. Here,
before FastAPI sees the request, an admin path without an accepted bearer token is answered
401/403 without one byte of the body read, a declared Content-Length over the limit 413 at once,
and a body without one (chunked) is counted as it arrives and refused 413 once past the limit
(the route then sees the client as gone, and whatever it would answer is dropped). Bodies also
take their share of the bytes in flight (`body_budget.py`): 503 with `Retry-After` beyond it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.admin_auth import AdminTokens
from server.api.body_budget import BodyBudget
from server.api.body_limit import check_declared_length
from server.api.error_handlers import describe_error, error_response
from server.errors import BodiesInFlightFull, HotserveError, PayloadTooLarge

ADMIN_PREFIXES = ("/admin/", "/v2/repository/")
"""Paths behind the admin tokens (mounted only when a token is configured)."""


def is_admin_path(path: str) -> bool:
    """Admin routes, and the labels route (`/v2/models/{name}/labels`), which takes the same tokens."""
    labels = path.startswith("/v2/models/") and path.endswith("/labels")
    return labels or path.startswith(ADMIN_PREFIXES) or path in {"/admin", "/v2/repository"}


class RouteGate:
    """Admin credentials before the body, and a body limit, for every FastAPI route."""

    def __init__(self, max_body_bytes: int, tokens: AdminTokens | None, bodies: BodyBudget) -> None:
        self.max_body_bytes = max_body_bytes
        self._tokens = tokens
        self._bodies = bodies

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            declared = self._check_head(scope) or 0
            self._bodies.take(declared)
        except HotserveError as error:
            await _refuse(error, scope, receive, send)
            return
        body = _BoundedBody(self.max_body_bytes, scope, receive, send, self._bodies, declared)
        try:
            await app(scope, body.receive, body.send)
        finally:
            self._bodies.give_back(body.taken)

    def _check_head(self, scope: Scope) -> int | None:
        """What the request line and headers alone decide: credentials, declared size."""
        headers = dict(scope["headers"])
        if self._tokens is not None and is_admin_path(scope["path"]):
            authorization = headers.get(b"authorization")
            self._tokens.identify(None if authorization is None else authorization.decode("latin-1"))
        return check_declared_length(headers.get(b"content-length"), self.max_body_bytes)


class _BoundedBody:
    """`receive` and `send` of one request whose body may not pass `limit_bytes`, nor the bytes in
    flight `bodies` allows (`taken`: what it holds of them, given back by the gate)."""

    def __init__(
        self, limit_bytes: int, scope: Scope, receive: Receive, send: Send, bodies: BodyBudget, taken: int
    ) -> None:
        self._limit_bytes = limit_bytes
        self._scope = scope
        self._receive = receive
        self._send = send
        self._bodies = bodies
        self.taken = taken
        self._received = 0
        self._started = False
        self._refused = False

    async def receive(self) -> Message:
        if self._refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            error: HotserveError | None = None
            if self._received > self._limit_bytes:
                error = PayloadTooLarge(self._received, self._limit_bytes)
            elif self._received > self.taken:
                try:
                    self._bodies.take(self._received - self.taken)
                    self.taken = self._received
                except BodiesInFlightFull as full:
                    error = full
            if error is not None:
                self._refused = True
                if not self._started:
                    await _refuse(error, self._scope, self._receive, self._send)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self._refused:
            return  # the 413 was the answer
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)


async def _refuse(error: HotserveError, scope: Scope, receive: Receive, send: Send) -> None:
    status, message, headers = describe_error(error, f"{scope.get('method', '')} {scope['path']}")
    # The body stays unread: the server closes the connection after this answer.
    headers["Connection"] = "close"
    await error_response(status, message, headers, fields=error.fields)(scope, receive, send)

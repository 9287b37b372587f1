"""The request-context step: the first thing every HTTP request passes through, in both lanes.

`HotserveApp` runs it ahead of the choice between the inference fast lane (plain ASGI) and
FastAPI's router, so cross-cutting work is written once: the request id is taken from
`x-request-id` (or the trace id of a W3C `traceparent`), generated otherwise, put in the ASGI
scope and a context variable (for logs), and echoed on the response. Pure ASGI, in the shape
of uvicorn's `ProxyHeadersMiddleware`: no Request object, one wrapped `send`.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
SCOPE_KEY = "hotserve.request_id"
MAX_REQUEST_ID_LENGTH = 128

request_id_var: ContextVar[str] = ContextVar("hotserve_request_id", default="")
"""The id of the request being handled (empty outside one): log records read it."""

_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_SAFE_ID = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: safe to echo in a header and a log


def request_id_of(scope: Scope) -> str:
    """The id the context step gave this request ("" if it did not run)."""
    return str(scope.get(SCOPE_KEY, ""))


def incoming_request_id(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> str | None:
    """A usable id sent by the client: `x-request-id` first, then `traceparent`'s trace id."""
    traceparent = None
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            value = value.strip()
            if 0 < len(value) <= MAX_REQUEST_ID_LENGTH and _SAFE_ID.fullmatch(value):
                return value.decode("ascii")
        elif name == b"traceparent":
            traceparent = value.strip()
    if traceparent is not None:
        match = _TRACEPARENT.fullmatch(traceparent)
        if match and match.group(1) != b"0" * 32:
            return match.group(1).decode("ascii")
    return None


def new_request_id() -> str:
    return os.urandom(16).hex()


class RequestContext:
    """Gives each HTTP request its id and returns it in the `x-request-id` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        scope[SCOPE_KEY] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)

"""The request-context step: the first thing every HTTP request passes through, in both lanes.

`HotserveApp` runs it ahead of the choice between the inference fast lane (plain ASGI) and
FastAPI's router, so cross-cutting work is written once: the request id is taken from
`x-request-id` (or the trace id of a W3C `traceparent`), generated otherwise, put in the ASGI
scope and a context variable (for logs), and echoed on the response. Once the request is
answered, its event goes to `RequestLog` (`server/api/request_log.py`): errors are logged with
their id, successes only when sampled. Pure ASGI, in the shape of uvicorn's
`ProxyHeadersMiddleware`: no Request object, one wrapped `send`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.request_log import EVENT_KEY, RequestEvent, RequestLog

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
    """Gives each HTTP request its id, returns it in the `x-request-id` response header, logs its event."""

    def __init__(self, app: ASGIApp, request_log: RequestLog | None = None) -> None:
        self.app = app
        self.request_log = request_log or RequestLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        scope[SCOPE_KEY] = request_id
        scope[EVENT_KEY] = event = RequestEvent()
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as error:
            # Nothing answered: the client left (499), or the server will answer 500.
            event.status = event.status or (499 if isinstance(error, asyncio.CancelledError) else 500)
            raise
        finally:
            self.request_log.finish(scope, request_id, event, status or event.status or 499,
                                    time.monotonic() - started)
            request_id_var.reset(token)

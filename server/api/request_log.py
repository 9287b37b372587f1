"""Request events: one structured log line per failed HTTP request (and a sample of successes).

`RequestLog.record` is the one function that logs a request event. Each lane calls it once per
request, so no request is logged twice: the inference fast lane (`server/api/inference.py`), which
alone knows the model, version and protocol its data-plane call routed to; and, for
every FastAPI route, `RequestLogMiddleware` (that lane only, off the hot path), which takes the
status from the response and the message from the error handlers (`note_error`). The request id
comes from the request-context step (`server/api/context.py`). Successes are skipped unless
sampled (`log_success_sample_rate`), so the hot path pays one comparison for them. A failure
is WARNING (4xx) or ERROR (5xx), except an *expected* answer: a 503 because the server is
shutting down (`ShuttingDown`, or readiness while draining) is what a SIGTERM asks for, so it is
INFO and pages nobody.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.context import request_id_of

ERROR_KEY = "hotserve.error"
"""Scope key of the error message a FastAPI route answered with."""
EXPECTED_KEY = "hotserve.expected"
"""Scope key set when a FastAPI route's error answer is an expected one (logged at INFO)."""
logger = logging.getLogger("hotserve.request")


class RequestLog:
    """Logs answered requests: every 4xx/5xx, and successful inference requests at `success_sample_rate`."""

    def __init__(self, success_sample_rate: float = 0.0) -> None:
        self.success_sample_rate = success_sample_rate

    def record(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        duration_s: float,
        model: str = "",
        version: str = "",
        protocol: str = "",
        error: str = "",
        expected: bool = False,
    ) -> None:
        """One answered request (status 499: the client went away before its answer); `expected`:
        an error answer the server gives on purpose (shutting down), logged at INFO."""
        if status < 400 and (
            not model or self.success_sample_rate <= 0.0 or random.random() >= self.success_sample_rate
        ):
            return
        if expected:
            level = logging.INFO
        else:
            level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            f"{method} {path} {status}" + (f": {error}" if error else ""),
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "model": model or None,
                "version": version or None,
                "protocol": protocol or None,
                "status": status,
                "duration_ms": round(duration_s * 1000.0, 3),
            },
        )


def note_error(scope: Scope, message: str, expected: bool = False) -> None:
    """Record the error message a FastAPI route answers with, for its request event."""
    scope[ERROR_KEY] = message
    if expected:
        note_expected(scope)


def note_expected(scope: Scope) -> None:
    """Mark a FastAPI route's error answer as expected (shutting down): its event is INFO."""
    scope[EXPECTED_KEY] = True


class RequestLogMiddleware:
    """The FastAPI lane's request events (health, metadata, drift, metrics, admin routes)."""

    def __init__(self, app: ASGIApp, request_log: RequestLog) -> None:
        self.app = app
        self.request_log = request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as error:
            # Nothing answered yet: the client left, or the server's error middleware answers 500.
            status = status or (499 if isinstance(error, asyncio.CancelledError) else 500)
            raise
        finally:
            self.request_log.record(
                request_id_of(scope),
                scope["method"],
                scope["path"],
                status or 499,
                time.monotonic() - started,
                error=scope.get(ERROR_KEY, ""),
                expected=scope.get(EXPECTED_KEY, False),
            )

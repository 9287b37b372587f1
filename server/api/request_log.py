"""Request events: one structured log line per failed HTTP request (and a sample of successes).

The request-context step (`server/api/context.py`) puts a `RequestEvent` in every request's scope,
measures the request and, once it is answered, calls `RequestLog.finish` — the one place a request
event is logged, for both lanes. What only a lane knows it writes into the event: the inference
fast lane the model, version and protocol it routed to; either lane the message of the error it
answered with. Successes are skipped unless sampled (`log_success_sample_rate`), so the hot path
pays one comparison for them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from starlette.types import Scope

EVENT_KEY = "hotserve.event"
logger = logging.getLogger("hotserve.request")


@dataclass(slots=True)
class RequestEvent:
    """What the lanes add to a request's log event."""

    model: str = ""
    version: str = ""
    protocol: str = ""
    error: str = ""
    """The message of the error answered (`{"error": ...}`), if any."""
    status: int = 0
    """Set by a lane that answered nothing (499: the client went away)."""


def event_of(scope: Scope) -> RequestEvent:
    """The request's event (a detached one when the context step did not run, e.g. in unit tests)."""
    event = scope.get(EVENT_KEY)
    return event if isinstance(event, RequestEvent) else RequestEvent()


def note_error(scope: Scope, message: str) -> None:
    """Record the error message a request is answered with, for its log event."""
    event_of(scope).error = message


class RequestLog:
    """Logs answered requests: every 4xx/5xx, and successful inference requests at `success_sample_rate`."""

    def __init__(self, success_sample_rate: float = 0.0) -> None:
        self.success_sample_rate = success_sample_rate

    def finish(self, scope: Scope, request_id: str, event: RequestEvent, status: int,
               duration_s: float) -> None:
        """Called once per HTTP request by the context step, with the status it was answered with."""
        if status < 400 and (not event.model or self.success_sample_rate <= 0.0
                             or random.random() >= self.success_sample_rate):
            return
        level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        if not logger.isEnabledFor(level):
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        message = f"{method} {path} {status}" + (f": {event.error}" if event.error else "")
        logger.log(level, message, extra={
            "request_id": request_id, "method": method, "path": path, "model": event.model or None,
            "version": event.version or None, "protocol": event.protocol or None,
            "status": status, "duration_ms": round(duration_s * 1000.0, 3)})

"""Process-wide logging, set up once by `hotserve serve`: one formatter for every logger, uvicorn's included.

`json` (the default): one JSON object per line with `time` (UTC, ISO 8601), `level`, `logger`,
`message`, the `request_id` of the request being handled (from the request-context step's context
variable) and, for request events, `method`, `path`, `model`, `version`, `protocol`, `status`,
`duration_ms`; `exception` carries a traceback. `text`: the same record as one readable line.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any, Literal

import orjson

from server.api.context import request_id_var
from server.contract.provenance import utc_timestamp

LogFormat = Literal["json", "text"]

REQUEST_FIELDS = ("method", "path", "model", "version", "protocol", "status", "duration_ms")
"""Attributes a request event sets on its record (`extra=`), emitted when present."""
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _request_id(record: logging.LogRecord) -> str:
    return str(getattr(record, "request_id", "") or request_id_var.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": utc_timestamp("milliseconds", at=record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id:
            doc["request_id"] = request_id
        for name in REQUEST_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [request_id=... model=...]` for a terminal."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"request_id={request_id}"] if (request_id := _request_id(record)) else []
        fields += [
            f"{name}={record.__dict__[name]}" for name in REQUEST_FIELDS if record.__dict__.get(name) is not None
        ]
        if not fields:
            return line
        head, newline, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} [{' '.join(fields)}]{newline}{tail}"


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A `dictConfig` routing every logger (root, uvicorn's) through one stderr handler."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"hotserve": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "hotserve", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's loggers lose their own handlers and propagate to the root's.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Install the formatter process-wide; Python warnings go through it too."""
    logging.config.dictConfig(logging_config(level, log_format))
    logging.captureWarnings(True)

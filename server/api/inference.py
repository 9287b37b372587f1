"""Inference routes, where the request path starts: v2 infer (JSON and binary) and v1 `:predict`.

These three routes are plain ASGI, dispatched by `HotserveApp` before FastAPI's router: on
the demo model FastAPI's per-request machinery (middleware stack, dependency solving,
Request/Response objects) cost more CPU than decoding, batching and encoding together.
Hot path: the body is read once, parsed with orjson into numpy arrays, handed to the
version's batcher, and the answer written with orjson straight from numpy. No pydantic on
tensors and no per-request logging; metrics are the only bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from server.api.deps import Edge, ServedModel
from server.api.error_handlers import describe_error
from server.errors import HotserveError, InvalidInput, ModelNotFound, ModelNotReady, PayloadTooLarge
from server.protocol.deadline import TIMEOUT_HEADER, deadline_from
from server.protocol.schema import schema_for
from server.protocol.v1 import assemble_features, check_records, encode_predictions, parse_instances, raw_tensor
from server.protocol.v2_request import HEADER_LENGTH, decode_infer_request
from server.protocol.v2_response import encode_infer_response

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_V1_PREDICT = re.compile(r"/v1/models/([^/]+):predict")
_JSON = b"application/json"
_OCTETS = b"application/octet-stream"


class _ClientGone(Exception):
    """The client disconnected before its request body was complete: nobody to answer."""


@dataclass(frozen=True, slots=True)
class Route:
    """An inference request's target, parsed from its path."""

    protocol: str  # "v1" | "v2"
    name: str
    version: str | None


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    content_type: bytes = _JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def match_route(path: str) -> Route | None:
    """The inference route a path is for, or None (FastAPI handles everything else)."""
    if m := _V2_INFER.fullmatch(path):
        return Route("v2", m.group(1), m.group(2))
    if m := _V1_PREDICT.fullmatch(path):
        return Route("v1", m.group(1), None)
    return None


def parse_version(name: str, version: str) -> int:
    """Versions are positive integers; anything else cannot exist (404)."""
    if not version.isdigit() or int(version) < 1:
        raise ModelNotFound(name, version)
    return int(version)


async def handle(edge: Edge, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one inference request: admission, body, protocol handler, metrics, response."""
    arrived = time.monotonic()
    model_label = version_label = ""
    entered = False
    answer: Answer
    if scope["method"] != "POST":
        await _send(send, Answer(405, orjson.dumps(
            {"error": f"method {scope['method']} not allowed on {scope['path']}"}),
            headers=((b"allow", b"POST"),)))
        return
    try:
        if edge.inflight.draining:
            raise ModelNotReady("server is shutting down")
        edge.inflight.enter()
        entered = True
        served = edge.registry.resolve(
            route.name, None if route.version is None else parse_version(route.name, route.version))
        # Label only resolved names: a client cannot mint new time series with bad names.
        model_label, version_label = served.name, str(served.version)
        headers = _headers_of(scope)
        body = await _read_body(receive, headers.get(b"content-length"),
                                edge.settings.max_request_bytes)
        if route.protocol == "v2":
            answer = await _infer_v2(served, body, headers, arrived)
        else:
            answer = await _predict_v1(served, body, headers, arrived)
    except (asyncio.CancelledError, _ClientGone) as exc:
        edge.request_metrics.record(model_label, version_label, route.protocol, 499,
                                    time.monotonic() - arrived)  # client gone (nginx's code)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    except Exception as exc:  # every failure becomes an answer; nothing reaches the client raw
        answer = _error_answer(exc, route)
    finally:
        if entered:
            edge.inflight.exit()
    await _send(send, answer)
    edge.request_metrics.record(model_label, version_label, route.protocol, answer.status,
                                time.monotonic() - arrived)


async def _send(send: Send, answer: Answer) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": [
        (b"content-type", answer.content_type),
        (b"content-length", str(len(answer.body)).encode()),
        *answer.headers,
    ]})
    await send({"type": "http.response.body", "body": answer.body})


def _headers_of(scope: Scope) -> dict[bytes, bytes]:
    # ASGI servers hand header names lower-cased.
    return dict(scope["headers"])


async def _read_body(receive: Receive, declared: bytes | None, limit_bytes: int) -> bytes:
    """The whole body; PayloadTooLarge as soon as it is known to exceed `limit_bytes`.

    A declared Content-Length over the limit is refused before reading; a body without one
    (chunked) is counted as it arrives, including when it all comes in one message.
    """
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput("Content-Length", expected="an integer",
                               got=repr(declared.decode(errors="replace"))) from None
        if size > limit_bytes:
            raise PayloadTooLarge(size, limit_bytes)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > limit_bytes:
            raise PayloadTooLarge(received, limit_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _infer_v2(served: ServedModel, body: bytes, headers: dict[bytes, bytes],
                    arrived: float) -> Answer:
    schema = schema_for(served.manifest)
    decoded = decode_infer_request(body, _text(headers.get(HEADER_LENGTH.encode())), schema)
    deadline = deadline_from(arrived, decoded.timeout_us, _text(headers.get(TIMEOUT_HEADER.encode())))
    results = await served.infer(decoded.inputs, decoded.rows, deadline)
    content, header_length = encode_infer_response(served.name, served.version, decoded, results)
    if header_length is None:
        return Answer(200, content)
    return Answer(200, content, _OCTETS,
                  ((b"inference-header-content-length", str(header_length).encode()),))


async def _predict_v1(served: ServedModel, body: bytes, headers: dict[bytes, bytes],
                      arrived: float) -> Answer:
    schema = schema_for(served.manifest)
    deadline = deadline_from(arrived, None, _text(headers.get(TIMEOUT_HEADER.encode())))
    instances = parse_instances(body)
    if not schema.batch_axis:
        raise InvalidInput("instances", detail="the model has no batch axis, so instances cannot be "
                                               "its rows; use the v2 protocol")
    spec = served.manifest.features
    inputs: dict[str, np.ndarray]
    if spec is None:
        input_name, tensor = raw_tensor(instances, schema)
        inputs = {input_name: tensor}
    else:
        if len(schema.inputs) != 1:
            raise InvalidInput("instances", detail=f"the model has inputs {list(schema.inputs)} besides "
                                                   f"{spec.input!r}; use the v2 protocol")
        records = check_records(instances, spec)
        inputs = {spec.input: assemble_features(records, spec, schema)}
    results = await served.infer(inputs, len(instances), deadline)
    return Answer(200, encode_predictions(served.name, served.version, results, schema.output_names))


def _error_answer(exc: Exception, route: Route) -> Answer:
    """The `{"error": ...}` answer for any failure, with the status from the one error table."""
    where = f"{route.protocol} inference for {route.name!r}"
    if not isinstance(exc, HotserveError):
        logger.exception("unhandled error on %s", where)
        return Answer(500, orjson.dumps({"error": "internal server error"}))
    status, message, headers = describe_error(exc, where)
    return Answer(status, orjson.dumps({"error": message}), headers=tuple(
        (k.lower().encode(), v.encode()) for k, v in headers.items()))

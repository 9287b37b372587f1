"""Inference routes over HTTP, where the request path starts: v2 infer (JSON and binary) and v1
`:predict`, each optionally pinned to a version.

These routes are plain ASGI, dispatched by `HotserveApp` before FastAPI's router: on the demo
model FastAPI's per-request machinery (middleware stack, dependency solving, Request/Response
objects) cost more CPU than decoding, batching and encoding together. This module is the REST
transport only: it opens a data-plane call (`server/dataplane/plane.py`: admission, routing,
leases, feature join, batcher, shadow copy), reads the body, decodes it with orjson into numpy
arrays against the routed version's schema, and encodes the outputs with orjson straight from
numpy. No pydantic on tensors; per request, one call's outcome and (only for errors, or when
sampled) one request event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from server.api.body_budget import BodyBudget
from server.api.body_limit import check_declared_length
from server.api.context import REQUEST_ID_HEADER, SCOPE_KEY
from server.api.deps import Edge
from server.api.error_handlers import describe_error, error_body
from server.api.http_protocol import OneWriteCycle
from server.dataplane.plane import CLIENT_GONE, Call
from server.errors import HotserveError, InvalidInput, PayloadTooLarge, ShuttingDown
from server.protocol.deadline import TIMEOUT_HEADER, deadline_from
from server.protocol.paths import InferenceTarget, parse_model_name, parse_version
from server.protocol.v1 import (
    check_records,
    encode_predictions,
    first_record_field,
    parse_instances,
    raw_tensor,
)
from server.protocol.v2_request import HEADER_LENGTH, decode_infer_request
from server.protocol.v2_response import encode_infer_response
from server.registry.served import ServedVersion
from server.request import InferenceRequest

logger = logging.getLogger(__name__)

_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_HEADER_LENGTH = HEADER_LENGTH.encode()  # ASGI servers hand header names lower-cased, as these are
_TIMEOUT = TIMEOUT_HEADER.encode()


ROUTING_KEY_HEADER = b"hotserve-routing-key"
"""Sticky traffic splitting: requests with the same key get the same version while a policy holds."""


class _ClientGone(Exception):
    """The client disconnected before its request body was complete: nobody to answer."""


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    content_type: bytes = _JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    error: str = ""
    """The error message of an error answer, for the request event."""
    expected: bool = False
    """An error answer given on purpose (shutting down): its request event is INFO."""


async def handle(edge: Edge, target: InferenceTarget, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one inference request: open a data-plane call, route + lease, body, decode, run,
    encode, outcome."""
    arrived = time.monotonic()
    request_id: str = scope[SCOPE_KEY]
    if scope["method"] != "POST":
        await _send(
            send,
            request_id,
            Answer(
                405,
                error_body(f"method {scope['method']} not allowed on {scope['path']}"),
                headers=((b"allow", b"POST"),),
            ),
        )
        edge.request_log.record(
            request_id,
            scope["method"],
            scope["path"],
            405,
            time.monotonic() - arrived,
            protocol=target.protocol,
            error="method not allowed",
        )
        return
    call = edge.plane.call(target.protocol, arrived)
    answer: Answer
    held = 0
    try:
        headers = _headers_of(scope)
        header_key = headers.get(ROUTING_KEY_HEADER)
        # Routed (and leased) before the body is read: a swap while it arrives cannot strand it.
        # A v1 request without a key may wait for its first record's entity key (`Call.pick`).
        served = call.route(
            parse_model_name(target.name),  # path parameters are parsed as FastAPI's routes parse them
            None if target.version is None else parse_version(target.name, target.version),
            None if header_key is None else header_key.decode("latin-1"),
            by_entity=target.protocol == "v1",
        )
        body = await _read_body(receive, headers.get(b"content-length"), edge.settings.max_request_bytes, edge.bodies)
        held = len(body)
        if served is None:
            served = call.pick(first_record_field(body, call.entity_field))
        # One client: no other request in the server's hands, so the batcher dispatches this one
        # at once rather than a loop turn later (InferenceRequest.alone).
        cycle = getattr(send, "__self__", None)
        alone = type(cycle) is OneWriteCycle and cycle.alone()
        if target.protocol == "v2":
            answer = await _infer_v2(call, served, body, headers, arrived, request_id, alone)
        else:
            answer = await _predict_v1(call, served, body, headers, arrived, request_id, alone)
    except (asyncio.CancelledError, _ClientGone) as exc:
        duration_s = call.finish(CLIENT_GONE)
        served = call.primary
        edge.request_log.record(
            request_id,
            "POST",
            scope["path"],
            CLIENT_GONE,
            duration_s,
            "" if served is None else served.name,
            "" if served is None else str(served.version),
            target.protocol,
            "client disconnected",
        )
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    except Exception as exc:  # every failure becomes an answer; nothing reaches the client raw
        answer = _error_answer(exc, target)
    finally:
        call.release()
        edge.bodies.give_back(held)
    await _send(send, request_id, answer)
    duration_s = call.finish(answer.status)
    # Label only resolved names: a client cannot mint log fields with bad names. Errors (and
    # sampled successes) only: for the rest this returns after one comparison.
    served = call.primary
    edge.request_log.record(
        request_id,
        "POST",
        scope["path"],
        answer.status,
        duration_s,
        "" if served is None else served.name,
        "" if served is None else str(served.version),
        target.protocol,
        answer.error,
        answer.expected,
    )


async def _send(send: Send, request_id: str, answer: Answer) -> None:
    headers = [
        (b"content-type", answer.content_type),
        (b"content-length", str(len(answer.body)).encode()),
        (REQUEST_ID_HEADER, request_id.encode()),
        *answer.headers,
    ]
    cycle = getattr(send, "__self__", None)
    if type(cycle) is OneWriteCycle:  # served by `hotserve serve`: the whole answer in one call
        await cycle.answer(answer.status, headers, answer.body)
        return
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def _headers_of(scope: Scope) -> dict[bytes, bytes]:
    # ASGI servers hand header names lower-cased.
    return dict(scope["headers"])


async def _read_body(receive: Receive, declared: bytes | None, limit_bytes: int, budget: BodyBudget) -> bytes:
    """The whole body, its size taken from `budget` (the caller gives `len(body)` back once
    answered); PayloadTooLarge as soon as it is known to exceed `limit_bytes`, BodiesInFlightFull
    when the budget cannot hold it.

    A declared Content-Length over the limit (or the budget) is refused before reading; a body
    without one (chunked) is counted as it arrives, including when it all comes in one message.
    """
    taken = check_declared_length(declared, limit_bytes) or 0
    budget.take(taken)
    try:
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
            if received > taken:
                budget.take(received - taken)
                taken = received
            chunks.append(chunk)
            if not message.get("more_body", False):
                budget.give_back(taken - received)  # shorter than declared: what it holds
                taken = received
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except BaseException:
        budget.give_back(taken)
        raise


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _infer_v2(
    call: Call,
    served: ServedVersion,
    body: bytes,
    headers: dict[bytes, bytes],
    arrived: float,
    request_id: str,
    alone: bool,
) -> Answer:
    decoded = decode_infer_request(body, _text(headers.get(_HEADER_LENGTH)), served.schema)
    deadline = deadline_from(arrived, decoded.timeout_us, _text(headers.get(_TIMEOUT)), served.default_timeout_s)
    results = await call.infer(InferenceRequest(decoded.inputs, decoded.rows, deadline, request_id, alone))
    content, header_length = encode_infer_response(served.name, served.version, decoded, results)
    if header_length is None:
        return Answer(200, content)
    return Answer(200, content, _OCTETS, ((b"inference-header-content-length", str(header_length).encode()),))


async def _predict_v1(
    call: Call,
    served: ServedVersion,
    body: bytes,
    headers: dict[bytes, bytes],
    arrived: float,
    request_id: str,
    alone: bool,
) -> Answer:
    schema = served.schema
    deadline = deadline_from(arrived, None, _text(headers.get(_TIMEOUT)), served.default_timeout_s)
    instances = parse_instances(body)
    if not schema.batch_axis:
        raise InvalidInput(
            "instances", detail="the model has no batch axis, so instances cannot be its rows; use the v2 protocol"
        )
    spec = served.manifest.features
    if spec is None:
        input_name, tensor = raw_tensor(instances, schema)
        results = await call.infer(InferenceRequest({input_name: tensor}, len(instances), deadline, request_id, alone))
    else:
        if len(schema.inputs) != 1:
            raise InvalidInput(
                "instances",
                detail=f"the model has inputs {list(schema.inputs)} besides {spec.input!r}; use the v2 protocol",
            )
        results = await call.infer_records(check_records(instances, spec), deadline, request_id)
    return Answer(200, encode_predictions(served.name, served.version, results, schema.output_names))


def _error_answer(exc: Exception, target: InferenceTarget) -> Answer:
    """The `{"error": ...}` answer for any failure, with the status from the one error table."""
    where = f"{target.protocol} inference for {target.name!r}"
    if not isinstance(exc, HotserveError):
        logger.exception("unhandled error on %s", where)
        return Answer(500, error_body("internal server error"), error="internal server error")
    status, message, headers = describe_error(exc, where)
    return Answer(
        status,
        error_body(message),
        headers=tuple((k.lower().encode(), v.encode()) for k, v in headers.items()),
        error=message,
        expected=isinstance(exc, ShuttingDown),
    )

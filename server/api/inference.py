"""Inference routes, where the request path starts: v2 infer (JSON and binary) and v1 `:predict`.

These three routes are plain ASGI, dispatched by `HotserveApp` before FastAPI's router: on
the demo model FastAPI's per-request machinery (middleware stack, dependency solving,
Request/Response objects) cost more CPU than decoding, batching and encoding together.
Hot path: the body is read once, parsed with orjson into numpy arrays, handed to the
version's batcher, and the answer written with orjson straight from numpy. No pydantic on
tensors; per request, metrics and (only for errors, or when sampled) one request event.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from server.api.context import REQUEST_ID_HEADER, SCOPE_KEY
from server.api.deps import Edge, ServedModel
from server.api.error_handlers import describe_error, error_body
from server.errors import HotserveError, InvalidInput, ModelNotReady, PayloadTooLarge
from server.features.join import FeatureJoin
from server.protocol.deadline import TIMEOUT_HEADER, deadline_from
from server.protocol.paths import InferenceTarget, parse_version
from server.protocol.v1 import (
    assemble_features,
    check_records,
    encode_predictions,
    first_record_field,
    parse_instances,
    raw_tensor,
)
from server.protocol.v2_request import HEADER_LENGTH, decode_infer_request
from server.protocol.v2_response import encode_infer_response
from server.request import InferenceRequest, Tensors

logger = logging.getLogger(__name__)

_JSON = b"application/json"
_OCTETS = b"application/octet-stream"


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


Answered = tuple[Answer, InferenceRequest, Tensors]
"""A protocol handler's success: the answer, and the request and outputs a shadow copy compares."""


async def handle(edge: Edge, target: InferenceTarget, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one inference request: admission, route + lease, body, protocol handler, metrics."""
    arrived = time.monotonic()
    model_label = version_label = ""
    entered = False
    served: ServedModel | None = None
    answer: Answer
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
    try:
        if edge.inflight.draining:
            raise ModelNotReady("server is shutting down")
        edge.inflight.enter()
        entered = True
        headers = _headers_of(scope)
        header_key = headers.get(ROUTING_KEY_HEADER)
        routing_key = None if header_key is None else header_key.decode("latin-1")
        body: bytes | None = None
        if routing_key is None and target.protocol == "v1" and target.version is None:
            # Sticky by entity: under a traffic split, a v1 request goes where its first
            # record's entity key hashes to, so its body is read before it is routed.
            entity_field = edge.registry.sticky_field(target.name)
            if entity_field is not None:
                body = await _read_body(receive, headers.get(b"content-length"), edge.settings.max_request_bytes)
                routing_key = first_record_field(body, entity_field)
        # Otherwise routed (and leased) before the body is read: a swap while it arrives cannot
        # strand it.
        served = edge.registry.acquire(
            target.name, None if target.version is None else parse_version(target.name, target.version), routing_key
        )
        # Label only resolved names: a client cannot mint new time series with bad names.
        model_label, version_label = served.name, str(served.version)
        if body is None:
            body = await _read_body(receive, headers.get(b"content-length"), edge.settings.max_request_bytes)
        if target.protocol == "v2":
            answer, request, results = await _infer_v2(served, body, headers, arrived, request_id)
        else:
            answer, request, results = await _predict_v1(served, edge.features, body, headers, arrived, request_id)
        if target.version is None:
            shadow = edge.registry.shadow_route(target.name)
            if shadow is not None and (shadow.share >= 1.0 or random.random() < shadow.share):
                edge.shadow.offer(shadow, request, results)
    except (asyncio.CancelledError, _ClientGone) as exc:
        edge.request_metrics.record(
            model_label, version_label, target.protocol, 499, time.monotonic() - arrived
        )  # client gone (nginx's code)
        edge.request_log.record(
            request_id,
            "POST",
            scope["path"],
            499,
            time.monotonic() - arrived,
            model_label,
            version_label,
            target.protocol,
            "client disconnected",
        )
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    except Exception as exc:  # every failure becomes an answer; nothing reaches the client raw
        answer = _error_answer(exc, target)
    finally:
        if served is not None:
            served.release()
        if entered:
            edge.inflight.exit()
    await _send(send, request_id, answer)
    edge.request_metrics.record(model_label, version_label, target.protocol, answer.status, time.monotonic() - arrived)
    if served is not None:  # the evidence of this load of the version (guarded promotion)
        served.evidence.answered(answer.status, time.monotonic() - arrived)
    # Errors (and sampled successes) only: for the rest this returns after one comparison.
    edge.request_log.record(
        request_id,
        "POST",
        scope["path"],
        answer.status,
        time.monotonic() - arrived,
        model_label,
        version_label,
        target.protocol,
        answer.error,
    )


async def _send(send: Send, request_id: str, answer: Answer) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [
                (b"content-type", answer.content_type),
                (b"content-length", str(len(answer.body)).encode()),
                (REQUEST_ID_HEADER, request_id.encode()),
                *answer.headers,
            ],
        }
    )
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
            raise InvalidInput(
                "Content-Length", expected="an integer", got=repr(declared.decode(errors="replace"))
            ) from None
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


async def _infer_v2(
    served: ServedModel, body: bytes, headers: dict[bytes, bytes], arrived: float, request_id: str
) -> Answered:
    decoded = decode_infer_request(body, _text(headers.get(HEADER_LENGTH.encode())), served.schema)
    deadline = deadline_from(
        arrived, decoded.timeout_us, _text(headers.get(TIMEOUT_HEADER.encode())), served.default_timeout_s
    )
    request = InferenceRequest(decoded.inputs, decoded.rows, arrived, deadline, request_id)
    results = await served.infer(request)
    content, header_length = encode_infer_response(served.name, served.version, decoded, results)
    if header_length is None:
        return Answer(200, content), request, results
    return (
        Answer(200, content, _OCTETS, ((b"inference-header-content-length", str(header_length).encode()),)),
        request,
        results,
    )


async def _predict_v1(
    served: ServedModel,
    features: FeatureJoin,
    body: bytes,
    headers: dict[bytes, bytes],
    arrived: float,
    request_id: str,
) -> Answered:
    schema = served.schema
    deadline = deadline_from(arrived, None, _text(headers.get(TIMEOUT_HEADER.encode())), served.default_timeout_s)
    instances = parse_instances(body)
    if not schema.batch_axis:
        raise InvalidInput(
            "instances", detail="the model has no batch axis, so instances cannot be its rows; use the v2 protocol"
        )
    spec = served.manifest.features
    inputs: Tensors
    entity_keys: tuple[str, ...] | None = None
    if spec is None:
        input_name, tensor = raw_tensor(instances, schema)
        inputs = {input_name: tensor}
    else:
        if len(schema.inputs) != 1:
            raise InvalidInput(
                "instances",
                detail=f"the model has inputs {list(schema.inputs)} besides {spec.input!r}; use the v2 protocol",
            )
        records = check_records(instances, spec)
        if spec.view is not None:
            records, entity_keys = await features.join(records, spec.view)
        inputs = {spec.input: assemble_features(records, spec, schema)}
    request = InferenceRequest(inputs, len(instances), arrived, deadline, request_id, entity_keys=entity_keys)
    results = await served.infer(request)
    answer = Answer(200, encode_predictions(served.name, served.version, results, schema.output_names))
    return answer, request, results


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
    )

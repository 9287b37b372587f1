"""Inference routes, where the request path starts: v2 infer (JSON and binary) and v1 `:predict`.

Hot path: the body is read once, parsed with orjson into numpy arrays, handed to the
version's batcher, and the answer written with orjson straight from numpy. No
pydantic on tensors and no per-request logging; metrics are the only bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Request, Response

from server.api.body import read_body
from server.api.deps import Edge, EdgeDep, ServedModel
from server.api.error_handlers import status_for
from server.errors import InvalidInput, ModelNotFound, ModelNotReady
from server.protocol.deadline import TIMEOUT_HEADER, deadline_from
from server.protocol.schema import schema_for
from server.protocol.v1 import assemble_features, check_records, encode_predictions, parse_instances, raw_tensor
from server.protocol.v2_request import HEADER_LENGTH, decode_infer_request
from server.protocol.v2_response import encode_infer_response

router = APIRouter()

Handler = Callable[[ServedModel, bytes, Request, float], Awaitable[Response]]

_ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "invalid input (field, expected, got)"},
    404: {"description": "unknown model or version"},
    413: {"description": "body larger than max_request_bytes"},
    429: {"description": "queue full; see Retry-After"},
    503: {"description": "model not ready or server shutting down"},
    504: {"description": "deadline passed before inference ran"},
}


@router.post("/v2/models/{name}/infer", responses=_ERROR_RESPONSES)
async def infer(name: str, request: Request, edge: EdgeDep) -> Response:
    """v2 infer on the model's serving version."""
    return await _handle(edge, request, name, None, "v2", _infer_v2)


@router.post("/v2/models/{name}/versions/{version}/infer", responses=_ERROR_RESPONSES)
async def infer_version(name: str, version: str, request: Request, edge: EdgeDep) -> Response:
    """v2 infer on a pinned version."""
    return await _handle(edge, request, name, version, "v2", _infer_v2)


@router.post("/v1/models/{name}:predict", responses=_ERROR_RESPONSES)
async def predict(name: str, request: Request, edge: EdgeDep) -> Response:
    """v1 records (or raw rows) -> predictions."""
    return await _handle(edge, request, name, None, "v1", _predict_v1)


def parse_version(name: str, version: str) -> int:
    """Versions are positive integers; anything else cannot exist (404)."""
    if not version.isdigit() or int(version) < 1:
        raise ModelNotFound(name, version)
    return int(version)


async def _handle(edge: Edge, request: Request, name: str, version: str | None,
                  protocol: str, handler: Handler) -> Response:
    """Admission, body, metrics and the in-flight count around one protocol handler."""
    arrived = time.monotonic()
    model_label = version_label = ""
    code = 500
    entered = False
    try:
        if edge.inflight.draining:
            raise ModelNotReady("server is shutting down")
        edge.inflight.enter()
        entered = True
        served = edge.registry.resolve(name, None if version is None else parse_version(name, version))
        # Label only resolved names: a client cannot mint new time series with bad names.
        model_label, version_label = served.name, str(served.version)
        body = await read_body(request, edge.settings.max_request_bytes)
        response = await handler(served, body, request, arrived)
        code = response.status_code
        return response
    except asyncio.CancelledError:
        code = 499  # the client went away (nginx's convention)
        raise
    except BaseException as exc:
        code = status_for(exc)
        raise
    finally:
        if entered:
            edge.inflight.exit()
        edge.request_metrics.record(model_label, version_label, protocol, code,
                                    time.monotonic() - arrived)


async def _infer_v2(served: ServedModel, body: bytes, request: Request, arrived: float) -> Response:
    schema = schema_for(served.manifest)
    decoded = decode_infer_request(body, request.headers.get(HEADER_LENGTH), schema)
    deadline = deadline_from(arrived, decoded.timeout_us, request.headers.get(TIMEOUT_HEADER))
    results = await served.infer(decoded.inputs, decoded.rows, deadline)
    content, header_length = encode_infer_response(served.name, served.version, decoded, results)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


async def _predict_v1(served: ServedModel, body: bytes, request: Request, arrived: float) -> Response:
    schema = schema_for(served.manifest)
    deadline = deadline_from(arrived, None, request.headers.get(TIMEOUT_HEADER))
    instances = parse_instances(body)
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
    content = encode_predictions(served.name, served.version, results, schema.output_names)
    return Response(content, media_type="application/json")

"""`ModelInfer`, where the gRPC request path starts: admission, route + lease, decode, batcher,
shadow copy, encode, metrics — the REST v2 lane's steps (`server/api/inference.py`) for a
`ModelInferRequest`.

Deadline: the sooner of the call's own gRPC deadline, Triton's `timeout` parameter, the
`hotserve-timeout-ms` metadata and the version's default. Routing: `model_version` pins a
version; otherwise the traffic policy routes, sticky by `hotserve-routing-key` metadata, and the
shadow gets its copy. Metrics and request events carry `protocol="grpc"` and, as `code`, the
HTTP status the same outcome has in the REST table, so dashboards and alerts cover both.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import grpc

from server.api.context import request_id_var
from server.api.deps import Edge, ServedModel
from server.api.error_handlers import status_for
from server.errors import HotserveError, ModelNotReady
from server.grpc_api.calls import PROTOCOL, Call
from server.grpc_api.status import describe_error
from server.protocol.deadline import TIMEOUT_HEADER, deadline_from
from server.protocol.grpc_codec import decode_model_infer, encode_model_infer
from server.protocol.paths import parse_version
from server.protocol.proto import inference_pb2 as pb
from server.request import InferenceRequest

logger = logging.getLogger(__name__)

ROUTING_KEY = "hotserve-routing-key"
"""Sticky traffic splitting, as REST's `Hotserve-Routing-Key` header."""
RPC = "/inference.GRPCInferenceService/ModelInfer"


async def model_infer(edge: Edge, call: Call, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """Answer one ModelInfer call, or abort it with the status code of what went wrong."""
    arrived = time.monotonic()
    token = request_id_var.set(call.request_id)
    model_label = version_label = ""
    served: ServedModel | None = None
    entered = False
    try:
        if edge.inflight.draining:
            raise ModelNotReady("server is shutting down")
        edge.inflight.enter()
        entered = True
        pinned = parse_version(message.model_name, message.model_version) if message.model_version else None
        served = edge.registry.acquire(message.model_name, pinned, call.metadata(ROUTING_KEY))
        model_label, version_label = served.name, str(served.version)
        decoded = decode_model_infer(message, served.schema)
        deadline = deadline_from(arrived, decoded.timeout_us, call.metadata(TIMEOUT_HEADER), served.default_timeout_s)
        own = call.deadline()
        if own is not None:
            deadline = own if deadline is None else min(deadline, own)
        request = InferenceRequest(decoded.inputs, decoded.rows, arrived, deadline, call.request_id)
        results = await served.infer(request)
        response = encode_model_infer(served.name, served.version, decoded, results)
        if pinned is None:
            shadow = edge.registry.shadow_route(message.model_name)
            if shadow is not None and (shadow.share >= 1.0 or random.random() < shadow.share):
                edge.shadow.offer(shadow, request, results)
    except asyncio.CancelledError:
        # The client went away, or its own deadline passed and gRPC cancelled the call.
        status = 504 if _passed(call) else 499
        _record(edge, call, arrived, model_label, version_label, status, "cancelled by the client or its deadline")
        raise
    except Exception as exc:  # every failure becomes a status code; nothing reaches the client raw
        status, code, text, trailers = _failure(exc, message.model_name)
        _record(edge, call, arrived, model_label, version_label, status, text)
        await call.abort(code, text, trailers)
        raise AssertionError("abort returned") from exc  # it raises
    finally:
        if served is not None:
            served.release()
        if entered:
            edge.inflight.exit()
        request_id_var.reset(token)
    _record(edge, call, arrived, model_label, version_label, 200, "")
    call.succeed()
    return response


def _failure(exc: Exception, model: str) -> tuple[int, grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    if not isinstance(exc, HotserveError):
        logger.exception("unhandled error on gRPC inference for %r", model)
        return 500, grpc.StatusCode.INTERNAL, "internal server error", ()
    code, text, trailers = describe_error(exc, f"gRPC inference for {model!r}")
    return status_for(exc), code, text, trailers


def _passed(call: Call) -> bool:
    deadline = call.deadline()
    return deadline is not None and deadline <= time.monotonic()


def _record(edge: Edge, call: Call, arrived: float, model: str, version: str, status: int, error: str) -> None:
    duration_s = time.monotonic() - arrived
    edge.request_metrics.record(model, version, PROTOCOL, status, duration_s)
    edge.request_log.record(call.request_id, "gRPC", RPC, status, duration_s, model, version, PROTOCOL, error)

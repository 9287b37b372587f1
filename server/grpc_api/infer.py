"""`ModelInfer`, where the gRPC request path starts: the gRPC transport over the data plane.

Like the REST fast lane (`server/api/inference.py`), this module only decodes and encodes: it
opens a data-plane call (`server/dataplane/plane.py`: admission, routing and leases, batcher,
shadow copy, outcome), decodes the `ModelInferRequest` against the routed version's schema,
and encodes the outputs as a `ModelInferResponse`.

Deadline: the sooner of the call's own gRPC deadline, Triton's `timeout` parameter, the
`hotserve-timeout-ms` metadata and the version's default. Routing: `model_version` pins a
version; otherwise the traffic policy routes, sticky by `hotserve-routing-key` metadata, and the
shadow gets its copy. Metrics and request events carry `protocol="grpc"` and, as `code`, the
HTTP status the same outcome has in the REST table, so dashboards and alerts cover both.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from server.api.context import request_id_var
from server.api.deps import Edge
from server.api.error_handlers import status_for
from server.dataplane.plane import Call
from server.errors import HotserveError, ShuttingDown
from server.grpc_api.calls import PROTOCOL, GrpcCall
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


async def model_infer(edge: Edge, rpc: GrpcCall, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """Answer one ModelInfer call, or abort it with the status code of what went wrong."""
    arrived = time.monotonic()
    token = request_id_var.set(rpc.request_id)
    call = edge.plane.call(PROTOCOL, arrived)
    try:
        pinned = parse_version(message.model_name, message.model_version) if message.model_version else None
        served = call.route(message.model_name, pinned, rpc.metadata(ROUTING_KEY))
        if served is None:  # only a v1 request (`by_entity`) waits for its body to pick a version
            raise RuntimeError("the data plane routed a tensor request without a primary")
        decoded = decode_model_infer(message, served.schema)
        deadline = deadline_from(arrived, decoded.timeout_us, rpc.metadata(TIMEOUT_HEADER), served.default_timeout_s)
        own = rpc.deadline()
        if own is not None:
            deadline = own if deadline is None else min(deadline, own)
        request = InferenceRequest(decoded.inputs, decoded.rows, deadline, rpc.request_id, rpc.alone)
        results = await call.infer(request)
        response = encode_model_infer(served.name, served.version, decoded, results)
    except asyncio.CancelledError:
        # The client went away, or its own deadline passed and gRPC cancelled the call.
        status = 504 if _passed(rpc) else 499
        _finish(edge, rpc, call, status, "cancelled by the client or its deadline")
        raise
    except Exception as exc:  # every failure becomes a status code; nothing reaches the client raw
        status, code, text, trailers = _failure(exc, message.model_name)
        _finish(edge, rpc, call, status, text, expected=isinstance(exc, ShuttingDown))
        await rpc.abort(code, text, trailers)
        raise AssertionError("abort returned") from exc  # it raises
    finally:
        call.release()
        request_id_var.reset(token)
    _finish(edge, rpc, call, 200, "")
    rpc.succeed()
    return response


def _failure(exc: Exception, model: str) -> tuple[int, grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    if not isinstance(exc, HotserveError):
        logger.exception("unhandled error on gRPC inference for %r", model)
        return 500, grpc.StatusCode.INTERNAL, "internal server error", ()
    code, text, trailers = describe_error(exc, f"gRPC inference for {model!r}")
    return status_for(exc), code, text, trailers


def _passed(rpc: GrpcCall) -> bool:
    deadline = rpc.deadline()
    return deadline is not None and deadline <= time.monotonic()


def _finish(edge: Edge, rpc: GrpcCall, call: Call, status: int, error: str, expected: bool = False) -> None:
    """Record the outcome (metrics through the data plane) and the request event."""
    duration_s = call.finish(status)
    # Label only resolved names: a client cannot mint new series or log fields with bad names.
    served = call.primary
    edge.request_log.record(
        rpc.request_id,
        "gRPC",
        RPC,
        status,
        duration_s,
        "" if served is None else served.name,
        "" if served is None else str(served.version),
        PROTOCOL,
        error,
        expected,
    )

"""The gRPC services: `inference.GRPCInferenceService` (the Open Inference Protocol) and
`grpc.health.v1.Health`, registered under those standard names.

Health, readiness and metadata read the registry as the REST routes do; the repository RPCs go
through the same admin tokens (`authorization: Bearer ...` metadata) and the same controller (the token checked before the message is read: `admin_gate.py`);
`ModelInfer` is in `server/grpc_api/infer.py`. Every failure leaves through `status.py`'s table;
an unexpected one is logged and answered INTERNAL, never with its text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

import server
from server.api.admin import refuse_load_overrides, triton_index
from server.api.deps import AdminPlane, Edge, state_name
from server.api.error_handlers import status_for
from server.contract.manifest import TensorSpec
from server.errors import HotserveError, ModelNotReady
from server.grpc_api.admin_gate import ADMIN_OFF
from server.grpc_api.calls import Context, GrpcCall
from server.grpc_api.infer import model_infer
from server.grpc_api.status import describe_error
from server.protocol.paths import parse_version
from server.protocol.proto import inference_pb2 as pb
from server.registry.control_api import Caller, ControlAPI

logger = logging.getLogger(__name__)

INFERENCE_SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
EXTENSIONS = ["parameters"]
"""Open Inference Protocol extensions offered over gRPC (raw contents are core, not an extension);
`model_repository` too when the admin API is on."""

Reply = TypeVar("Reply")


class InferenceService:
    """`inference.GRPCInferenceService`: one method per RPC of the proto's service."""

    def __init__(self, edge: Edge, admin: AdminPlane | None) -> None:
        self._edge = edge
        self._admin = admin

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._edge.registry.ready and not self._edge.inflight.draining)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        extensions = EXTENSIONS if self._admin is None else [*EXTENSIONS, "model_repository"]
        return pb.ServerMetadataResponse(name="hotserve", version=server.__version__, extensions=extensions)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        async def answer(call: GrpcCall) -> pb.ModelReadyResponse:
            version = parse_version(request.name, request.version) if request.version else None
            try:
                self._edge.registry.resolve(request.name, version)
            except ModelNotReady:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=not self._edge.inflight.draining)

        return await self._answer(context, "ModelReady", answer)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        async def answer(call: GrpcCall) -> pb.ModelMetadataResponse:
            version = parse_version(request.name, request.version) if request.version else None
            served = self._edge.registry.resolve(request.name, version)
            ready = [
                str(s.version)
                for s in self._edge.registry.statuses()
                if s.name == request.name and state_name(s.state) == "READY"
            ]
            manifest = served.manifest
            return pb.ModelMetadataResponse(
                name=served.name,
                versions=ready,
                platform=manifest.platform,
                inputs=[_tensor_metadata(spec) for spec in manifest.inputs],
                outputs=[_tensor_metadata(spec) for spec in manifest.outputs],
            )

        return await self._answer(context, "ModelMetadata", answer)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return await model_infer(self._edge, GrpcCall(context), request)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> pb.RepositoryIndexResponse:
        async def answer(call: GrpcCall) -> pb.RepositoryIndexResponse:
            controller, caller = self._admin_call(call)
            entries = triton_index(await controller.index(caller), request.ready)
            return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

        return await self._answer(context, "RepositoryIndex", answer)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        async def answer(call: GrpcCall) -> pb.RepositoryModelLoadResponse:
            controller, caller = self._admin_call(call)
            refuse_load_overrides(request.parameters.keys())
            await controller.load_model(caller, request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._answer(context, "RepositoryModelLoad", answer)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        async def answer(call: GrpcCall) -> pb.RepositoryModelUnloadResponse:
            controller, caller = self._admin_call(call)  # `unload_dependents`: no ensembles here
            await controller.unload_model(caller, request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._answer(context, "RepositoryModelUnload", answer)

    def _admin_call(self, call: GrpcCall) -> tuple[ControlAPI, Caller]:
        """The controller and who calls: UNAUTHENTICATED without a bearer token, PERMISSION_DENIED
        with an unknown one; UNIMPLEMENTED when the admin API is off."""
        if self._admin is None:
            raise _AdminOff
        caller = Caller(self._admin.tokens.identify(call.metadata("authorization")), call.request_id)
        if self._admin.controller is None:
            raise ModelNotReady("model changes need the model registry, which this app does not run")
        return self._admin.controller, caller

    async def _answer(self, context: Context, rpc: str, answer: Callable[[GrpcCall], Awaitable[Reply]]) -> Reply:
        """Run one RPC's `answer`; a failure becomes its status code (and a request event)."""
        started = time.monotonic()
        call = GrpcCall(context)
        trailers: tuple[tuple[str, str], ...]
        try:
            return await answer(call)
        except _AdminOff:
            status, code, trailers = 404, grpc.StatusCode.UNIMPLEMENTED, ()  # REST: no such route
            message = ADMIN_OFF
        except HotserveError as exc:
            status = status_for(exc)
            code, message, trailers = describe_error(exc, f"gRPC {rpc}")
        except Exception:
            logger.exception("unhandled error on gRPC %s", rpc)
            status, code, message, trailers = 500, grpc.StatusCode.INTERNAL, "internal server error", ()
        call.log_error(self._edge, rpc, status, message, time.monotonic() - started)
        await call.abort(code, message, trailers)
        raise AssertionError("abort returned")  # it raises


class HealthService:
    """`grpc.health.v1.Health/Check`, for Kubernetes' gRPC probes and gRPC load balancers.

    Service "" is the server process: SERVING whenever it answers (`/v2/health/live`), so a
    liveness or startup probe never restarts a draining pod. Service
    `inference.GRPCInferenceService` is readiness (`/v2/health/ready`): SERVING once every model
    has a serving version, NOT_SERVING again as soon as graceful shutdown starts.
    """

    def __init__(self, edge: Edge) -> None:
        self._edge = edge

    async def Check(self, request: pb.HealthCheckRequest, context: Context) -> pb.HealthCheckResponse:
        status = pb.HealthCheckResponse.ServingStatus
        if request.service == "":
            return pb.HealthCheckResponse(status=status.SERVING)
        if request.service != INFERENCE_SERVICE:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        ready = self._edge.registry.ready and not self._edge.inflight.draining
        return pb.HealthCheckResponse(status=status.SERVING if ready else status.NOT_SERVING)


class _AdminOff(Exception):
    """A repository RPC while no admin token is configured."""


def service_methods(descriptor: ServiceDescriptor, servicer: object) -> list[tuple[str, Callable[..., Any], Any, Any]]:
    """(method name, `servicer`'s coroutine, request class, response class) of each RPC the proto declares."""
    return [
        (
            method.name,
            getattr(servicer, method.name),
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )
        for method in descriptor.methods
    ]


def generic_handler(name: str, descriptor: ServiceDescriptor, servicer: object) -> grpc.GenericRpcHandler:
    """Register `servicer`'s methods with grpc.aio as the service `name`, with the messages the proto declares.

    The proto's package is hotserve's own (see the .proto), so the wire name comes from here.
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        method: grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=request_class.FromString, response_serializer=response_class.SerializeToString
        )
        for method, handler, request_class, response_class in service_methods(descriptor, servicer)
    }
    return grpc.method_handlers_generic_handler(name, handlers)


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)

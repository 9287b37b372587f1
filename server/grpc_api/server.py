"""The gRPC server: on `HOTSERVE_GRPC_PORT`, in the process and on the event loop of the REST
server, started and stopped by the app's lifespan (`server/app.py`).

Two transports run the same services (`services.py`): hotserve's own HTTP/2 server (`h2/`, the
default: one protocol object per connection on the event loop, calls that arrive together reach
the batcher together) and grpc.aio (`HOTSERVE_GRPC_SERVER=grpcio`, the fallback). Either way
messages are bounded like REST bodies (`max_request_bytes`: a larger one is refused with
RESOURCE_EXHAUSTED before it is read), and a repository RPC without an accepted token is refused
before its message is read (`admin_gate.py`). Graceful shutdown: `ModelInfer` calls count in the
same in-flight gauge as REST requests, so SIGTERM's drain waits for both; `stop` then refuses new
calls (GOAWAY) and gives calls still open what is left of the grace period.
"""

from __future__ import annotations

import logging

import grpc

from server.api.deps import AdminPlane, Edge
from server.grpc_api.admin_gate import AdminGate, header_gate
from server.grpc_api.h2.rpc import H2Server, Route, Service
from server.grpc_api.services import (
    HEALTH_SERVICE,
    INFERENCE_SERVICE,
    HealthService,
    InferenceService,
    generic_handler,
    service_methods,
)
from server.protocol.proto import inference_pb2 as pb

logger = logging.getLogger(__name__)


class GrpcServer:
    """The Open Inference Protocol and health services on their own port."""

    def __init__(self, edge: Edge, admin: AdminPlane | None) -> None:
        self._edge = edge
        self._admin = admin
        self._aio: grpc.aio.Server | None = None
        self._h2: H2Server | None = None
        self.port: int | None = None
        """The bound port once started."""

    async def start(self, host: str, port: int) -> None:
        descriptors = pb.DESCRIPTOR.services_by_name
        services = (
            (INFERENCE_SERVICE, descriptors["GRPCInferenceService"], InferenceService(self._edge, self._admin)),
            (HEALTH_SERVICE, descriptors["Health"], HealthService(self._edge)),
        )
        repository_methods = frozenset(
            f"/{INFERENCE_SERVICE}/{method.name}"
            for method in descriptors["GRPCInferenceService"].methods
            if method.name.startswith("Repository")
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        transport = self._edge.settings.grpc_server
        if transport == "grpcio":
            server = grpc.aio.server(
                interceptors=[AdminGate(self._edge, self._admin, repository_methods)],
                options=[
                    ("grpc.max_receive_message_length", self._edge.settings.max_request_bytes),
                    ("grpc.so_reuseport", 0),
                ],
            )
            server.add_generic_rpc_handlers(
                tuple(generic_handler(name, descriptor, servicer) for name, descriptor, servicer in services)
            )
            self.port = server.add_insecure_port(address)
            await server.start()
            self._aio = server
        else:
            routes: dict[str, Route] = {}
            for name, descriptor, servicer in services:
                for method, handler, request_class, response_class in service_methods(descriptor, servicer):
                    path = f"/{name}/{method}"
                    routes[path] = Route(
                        path,
                        handler,
                        request_class.FromString,
                        response_class.SerializeToString,
                        path in repository_methods,
                    )
            service = Service(routes, self._edge.settings.max_request_bytes, header_gate(self._edge, self._admin))
            self._h2 = H2Server(service)
            self.port = await self._h2.start(host, port)
        logger.info("gRPC (%s, %s transport) on %s", INFERENCE_SERVICE, transport, address)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and give open ones up to `grace_s` to finish."""
        if self._aio is not None:
            await self._aio.stop(grace_s)
            self._aio = None
        if self._h2 is not None:
            await self._h2.stop(grace_s)
            self._h2 = None

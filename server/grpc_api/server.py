"""The gRPC server: a grpc.aio server on `HOTSERVE_GRPC_PORT`, in the process and on the event
loop of the REST server, started and stopped by the app's lifespan (`server/app.py`).

Messages are bounded like REST bodies (`max_request_bytes`: a larger one is refused by gRPC with
RESOURCE_EXHAUSTED before it reaches a handler), and a repository RPC without an accepted token
is refused before its message is read (`admin_gate.py`). Graceful shutdown: `ModelInfer` calls count in the
same in-flight gauge as REST requests, so SIGTERM's drain waits for both; `stop` then gives calls
still open what is left of the grace period.
"""

from __future__ import annotations

import logging

import grpc

from server.api.deps import AdminPlane, Edge
from server.grpc_api.admin_gate import AdminGate
from server.grpc_api.services import (
    HEALTH_SERVICE,
    INFERENCE_SERVICE,
    HealthService,
    InferenceService,
    generic_handler,
)
from server.protocol.proto import inference_pb2 as pb

logger = logging.getLogger(__name__)


class GrpcServer:
    """The Open Inference Protocol and health services on their own port."""

    def __init__(self, edge: Edge, admin: AdminPlane | None) -> None:
        self._edge = edge
        self._admin = admin
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None
        """The bound port once started."""

    async def start(self, host: str, port: int) -> None:
        max_bytes = self._edge.settings.max_request_bytes
        services = pb.DESCRIPTOR.services_by_name
        repository_methods = frozenset(
            f"/{INFERENCE_SERVICE}/{method.name}"
            for method in services["GRPCInferenceService"].methods
            if method.name.startswith("Repository")
        )
        server = grpc.aio.server(
            interceptors=[AdminGate(self._edge, self._admin, repository_methods)],
            options=[("grpc.max_receive_message_length", max_bytes), ("grpc.so_reuseport", 0)],
        )
        server.add_generic_rpc_handlers(
            (
                generic_handler(
                    INFERENCE_SERVICE, services["GRPCInferenceService"], InferenceService(self._edge, self._admin)
                ),
                generic_handler(HEALTH_SERVICE, services["Health"], HealthService(self._edge)),
            )
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        logger.info("gRPC (%s) on %s", INFERENCE_SERVICE, address)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and give open ones up to `grace_s` to finish."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

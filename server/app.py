"""`create_app`: the one composition root. Builds metrics, the model registry and the edge state,
starts the registry before serving, and closes it (draining batches) on shutdown.

`HotserveApp` passes every request through the request-context step (`server/api/context.py`),
then sends the three inference routes straight to `server/api/inference.py` (plain ASGI, the
hot path) and everything else (health, metadata, metrics, admin) through FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

import server
from server.api import features_admin, health, inference
from server.api import metrics as metrics_route
from server.api.context import begin_request, echo_request_id, end_request
from server.api.deps import Edge, Registry
from server.api.error_handlers import install_error_handlers
from server.api.inflight import InflightRequests
from server.api.request_metrics import RequestMetrics
from server.features.service import open_features
from server.metrics.instruments import Metrics
from server.protocol.paths import match_inference_path
from server.registry.registry import ModelRegistry
from server.settings import Settings
from server.shadow import ShadowRunner

logger = logging.getLogger(__name__)


class HotserveApp(FastAPI):
    """FastAPI with the request-context step and an inference fast lane in front of its router."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request_id, token = begin_request(scope)  # the request-context step, for both lanes
        try:
            target = match_inference_path(scope["path"])
            if target is not None:
                await inference.handle(self.state.edge, target, scope, receive, send)
            else:
                await super().__call__(scope, receive, echo_request_id(send, request_id))
        finally:
            end_request(token)


def create_app(settings: Settings, registry: Registry | None = None,
               metrics: Metrics | None = None) -> HotserveApp:
    """The hotserve ASGI app. Tests may inject a registry (and the metrics it records into)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app_metrics = metrics if metrics is not None else Metrics()
        app_registry: Registry = registry if registry is not None else ModelRegistry(settings, app_metrics)
        features = await open_features(settings, app_metrics)
        edge = Edge(settings=settings, registry=app_registry, metrics=app_metrics,
                    inflight=InflightRequests(app_metrics),
                    request_metrics=RequestMetrics(app_metrics), features=features,
                    shadow=ShadowRunner(app_metrics, max_queue=settings.shadow_queue_size,
                                        workers=settings.shadow_workers))
        app.state.edge = edge
        await app_registry.start()
        edge.shadow.start()
        logger.info("serving %s on %s:%d (ready=%s)", settings.model_repository, settings.host,
                    settings.port, app_registry.ready)
        try:
            yield
        finally:
            # Graceful shutdown already waited for in-flight requests; the registry gets
            # what is left of the grace period to finish queued batches.
            await edge.shadow.close()
            await app_registry.close(edge.inflight.grace_left(settings.shutdown_grace_s))
            await features.lookup.close()

    app = HotserveApp(title="hotserve", version=server.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(features_admin.router)
    return app

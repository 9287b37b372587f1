"""`create_app`: the one composition root. Builds metrics, opens the control-state and feature
stores, builds the model registry, its controller, the data plane and the edge state, starts the
registry before serving, and closes it (draining batches) on shutdown.

`HotserveApp` passes every request through the request-context step (`server/api/context.py`),
then sends the inference routes straight to `server/api/inference.py` (plain ASGI, the hot
path, which decodes into the transport-free `DataPlane`) and everything else (health,
metadata, drift, metrics, admin) through FastAPI. The lifespan also runs the drift monitor's
periodic recomputation (`server/monitoring/`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

import server
from server.api import admin, drift, features_admin, health, inference, labels, openapi
from server.api import metrics as metrics_route
from server.api.admin_auth import AdminTokens
from server.api.body_budget import BodyBudget
from server.api.context import begin_request, echo_request_id, end_request
from server.api.deps import AdminPlane, Edge, Registry
from server.api.error_handlers import install_error_handlers
from server.api.request_log import RequestLog, RequestLogMiddleware
from server.api.route_gate import RouteGate
from server.capture.service import open_capture
from server.capture.tap import CaptureTap
from server.dataplane.inflight import InflightRequests
from server.dataplane.plane import DataPlane
from server.dataplane.request_metrics import RequestMetrics
from server.evidence.recorder import MemoryEvidenceRecorder
from server.evidence.windows import EvidenceWindows
from server.features.service import open_features
from server.grpc_api.server import GrpcServer
from server.labels.service import open_labels
from server.metrics.instruments import Metrics
from server.monitoring.drift import DriftConfig
from server.monitoring.monitor import DriftMonitor
from server.protocol.paths import match_inference_path
from server.registry.audit import FileAuditLog
from server.registry.control_state import ControlState
from server.registry.control_store import open_control_state
from server.registry.controller import Controller
from server.registry.loader import read_manifest
from server.registry.refusals import RecordedRefusals
from server.registry.registry import ModelRegistry
from server.release.driver import ReleaseDriver
from server.release.label_gate import LabelGate
from server.release.registry_alias import MlflowAliases
from server.release.store import open_release_store
from server.settings import Settings
from server.shadow import ShadowRunner
from server.shutdown import STEP_BOUND_S, ShutdownSteps

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
            else:  # credentials and body size are checked before FastAPI reads a byte
                await self.state.gate(super().__call__, scope, receive, echo_request_id(send, request_id))
        finally:
            end_request(token)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document completed with the fast lane's routes and the real error answers."""
        if self.openapi_schema is None:
            self.openapi_schema = openapi.complete(super().openapi())
        return self.openapi_schema


def create_app(settings: Settings, registry: Registry | None = None, metrics: Metrics | None = None) -> HotserveApp:
    """The hotserve ASGI app. Tests may inject a registry (and the metrics it records into).

    Raises AdminTokensInvalid (a ValueError) when the configured admin tokens are unusable.
    """
    admin_tokens = AdminTokens.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app_metrics = (
            metrics
            if metrics is not None
            else Metrics(
                drift=DriftMonitor(DriftConfig.from_settings(settings)),
                evidence=MemoryEvidenceRecorder(EvidenceWindows.from_settings(settings)),
            )
        )
        # The control-state store, like the feature store, is opened here and handed in.
        control: ControlState | None = None
        app_registry: Registry
        # Refused documents in Redis (routing, release records, evidence): one report each.
        refusals = RecordedRefusals(app_metrics, FileAuditLog(settings.resolved_audit_log_path), settings.replica_id)
        if registry is None:
            control = open_control_state(settings, app_metrics, refusals)
            app_registry = ModelRegistry(settings, app_metrics, control)
        else:
            app_registry = registry
        features = await open_features(settings, app_metrics)
        # Capture (server/capture/): a writer thread to the sink, fed by a tap on the data plane;
        # per-model shares come from the applied control state.
        capture = open_capture(settings, app_metrics)
        # Labels and live quality (server/labels/, server/quality/): capture's writer feeds the served
        # index every captured row, and label files are appended through it.
        label_service = app.state.labels = open_labels(
            settings, app_metrics, lambda: [(s.name, s.version) for s in app_registry.statuses()], capture
        )
        if capture is not None:
            capture.index = label_service.index
        applied = app_registry if isinstance(app_registry, ModelRegistry) else None
        plane = DataPlane(
            router=app_registry,
            features=features,
            shadow=ShadowRunner(
                app_metrics,
                max_pending=settings.shadow_max_pending,
                yield_to_primary=settings.shadow_yield_to_primary,
                max_inference_share=settings.shadow_max_inference_share,
            ),
            inflight=InflightRequests(app_metrics),
            request_metrics=RequestMetrics(app_metrics),
            capture=CaptureTap(
                capture, app_metrics, settings.capture_sample, None if applied is None else (lambda: applied.applied)
            ),
        )
        edge = Edge(
            settings=settings,
            registry=app_registry,
            metrics=app_metrics,
            plane=plane,
            request_log=request_log,
            bodies=bodies,
        )
        app_metrics.request_body_bytes_in_flight.set_function(lambda: bodies.held_bytes)
        app.state.edge = edge
        admin_plane: AdminPlane | None = None
        if admin_tokens is not None:
            controller = (
                Controller(
                    app_registry,
                    FileAuditLog(settings.resolved_audit_log_path),
                    app_metrics,
                    keep_previous_loaded=settings.keep_previous_loaded,
                )
                if isinstance(app_registry, ModelRegistry)
                else None
            )
            releases = (
                None
                if controller is None or not isinstance(app_metrics.evidence, MemoryEvidenceRecorder)
                else ReleaseDriver(
                    open_release_store(settings, refusals),
                    controller,
                    app_metrics.evidence,
                    FileAuditLog(settings.resolved_audit_log_path),
                    settings.replica_id,
                    app_metrics,
                    settings.release_tick_s,
                    registry=_registry_aliases(settings),
                    labels=LabelGate(label_service.intake.pairs, label_service.quality.contracts),
                    refusals=refusals,
                )
            )
            admin_plane = app.state.admin = AdminPlane(admin_tokens, controller, releases)
            logger.info(
                "admin API on /admin and /v2/repository for tokens: %s; audit log %s",
                ", ".join(admin_tokens.names),
                settings.resolved_audit_log_path,
            )
        else:
            logger.info(
                "admin API off (404): set HOTSERVE_ADMIN_TOKENS, HOTSERVE_ADMIN_TOKENS_FILE "
                "or HOTSERVE_ADMIN_TOKEN to turn it on"
            )
        await app_registry.start()
        edge.shadow.start()
        if capture is not None:
            capture.start()
        if admin_plane is not None and admin_plane.releases is not None:
            admin_plane.releases.start()
        logger.info(
            "serving %s on %s:%d (ready=%s)",
            settings.model_repository,
            settings.host,
            settings.port,
            app_registry.ready,
        )
        # With HOTSERVE_GRPC_PORT, the gRPC transport (`server/grpc_api/`) on the same edge objects.
        grpc_server = GrpcServer(edge, admin_plane)
        if settings.grpc_port is not None:
            await grpc_server.start(settings.host, settings.grpc_port)
        drift_task = asyncio.create_task(app_metrics.drift.run(), name="hotserve-drift")
        quality_task = asyncio.create_task(label_service.quality.run(), name="hotserve-quality")
        metrics_listener = (
            None
            if settings.metrics_port is None
            else metrics_route.MetricsListener(settings.host, settings.metrics_port, app_metrics.registry)
        )
        try:
            yield
        finally:
            # Every step is bounded (server/shutdown.py): the process exits within its grace period.
            steps = app.state.shutdown = ShutdownSteps()
            # gRPC calls were drained with REST ones (the same in-flight count); any still open
            # get what is left of the grace period.
            grace = edge.inflight.grace_left(settings.shutdown_grace_s)
            await steps.run("the gRPC server", grpc_server.stop(grace), grace + STEP_BOUND_S)
            if admin_plane is not None and admin_plane.releases is not None:
                await steps.run("the release driver", admin_plane.releases.stop())
            if metrics_listener is not None:
                metrics_listener.close()
            drift_task.cancel()
            await steps.run("the drift monitor", _finished(drift_task))
            quality_task.cancel()
            await steps.run("live quality", _finished(quality_task))
            # Graceful shutdown already waited for in-flight requests; the registry gets
            # what is left of the grace period to finish queued batches.
            await steps.run("shadow copies", edge.shadow.close())
            grace = edge.inflight.grace_left(settings.shutdown_grace_s)
            await steps.run("the model registry", app_registry.close(grace), grace + STEP_BOUND_S)
            if capture is not None:  # every request has been answered: write all that was accepted
                flush_s = max(STEP_BOUND_S, edge.inflight.grace_left(settings.shutdown_grace_s))
                await steps.run("the capture writer", asyncio.to_thread(capture.close, flush_s), flush_s + STEP_BOUND_S)
            if control is not None:
                await steps.run("the control store", control.close())
            await steps.run("the feature store", features.close())
            await steps.run("the label stores", asyncio.to_thread(label_service.close))

    request_log = RequestLog(settings.log_success_sample_rate)
    bodies = BodyBudget(settings.max_body_bytes_in_flight)  # both lanes' bodies in flight
    app = HotserveApp(title="hotserve", version=server.__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(RequestLogMiddleware, request_log=request_log)  # the FastAPI lane only
    app.state.gate = RouteGate(settings.max_route_request_bytes, admin_tokens, bodies)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(drift.router)
    if settings.metrics_port is None:
        app.include_router(metrics_route.router)
    if admin_tokens is not None:
        app.include_router(features_admin.router)
        app.include_router(admin.router)
        app.include_router(admin.repository_router)
        app.include_router(labels.router)
    return app


async def _finished(task: asyncio.Task[None]) -> None:
    """Wait for a cancelled `task` to end."""
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _registry_aliases(settings: Settings) -> MlflowAliases | None:
    """Where releases record their verdicts in MLflow's Model Registry, when a tracking URI is set."""
    if settings.mlflow_tracking_uri is None:
        return None
    repository = settings.model_repository
    return MlflowAliases(
        settings.mlflow_tracking_uri.get_secret_value(),
        lambda model, version: read_manifest(repository / model / str(version), model, version),
    )

"""What the HTTP edge needs from the engine, as Protocols, and the FastAPI dependency aliases.

`server/registry/` (`ModelRegistry`, `ServedVersion`) implements these; tests
pass small fakes. Routes reach app-wide objects only through the aliases below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from server.api.admin_auth import AdminTokens
from server.api.context import request_id_of
from server.api.inflight import InflightRequests
from server.api.request_log import RequestLog
from server.api.request_metrics import RequestMetrics
from server.contract.manifest import ModelManifest
from server.errors import ModelNotReady
from server.evidence.load import LoadEvidence
from server.features.join import FeatureJoin
from server.metrics.instruments import Metrics
from server.protocol.schema import ModelSchema
from server.registry.controller import Caller, Controller
from server.request import InferenceRequest, Tensors
from server.routing.table import ShadowRoute
from server.settings import Settings
from server.shadow import ShadowRunner


class ServedModel(Protocol):
    """One loaded, routable model version (`ServedVersion`)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def manifest(self) -> ModelManifest: ...

    @property
    def schema(self) -> ModelSchema:
        """What requests are decoded and checked against."""
        ...

    @property
    def default_timeout_s(self) -> float | None: ...

    @property
    def evidence(self) -> LoadEvidence:
        """What this load of the version shows, for guarded promotion (fed once per answer)."""
        ...

    @property
    def provider(self) -> str:
        """Execution provider in use."""
        ...

    async def infer(self, request: InferenceRequest) -> Tensors: ...

    def release(self) -> None:
        """Give back the lease `Registry.acquire` took."""
        ...


class VersionStatusView(Protocol):
    """One model version found in the repository and its state."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def state(self) -> Any:
        """AVAILABLE | LOADING | READY | FAILED | DRAINING | UNLOADED (an Enum or its value)."""
        ...

    @property
    def reason(self) -> str | None: ...


class Registry(Protocol):
    """The engine's `ModelRegistry` as the edge uses it."""

    async def start(self) -> None: ...

    def acquire(self, name: str, version: int | None = None, routing_key: str | None = None) -> ServedModel:
        """Route a request (pinned, or by the traffic policy, sticky by `routing_key`) and lease
        the version; the caller releases it once answered."""
        ...

    def sticky_field(self, name: str) -> str | None:
        """The v1 field (entity key) that keeps requests on one version under a traffic split."""
        ...

    def shadow_route(self, name: str) -> ShadowRoute | None:
        """Where copies of `name`'s unpinned requests go, if a shadow is set and ready."""
        ...

    def resolve(self, name: str, version: int | None = None) -> ServedModel:
        """The version a request would be routed to (metadata, readiness; no lease)."""
        ...

    def statuses(self) -> Sequence[VersionStatusView]: ...

    @property
    def ready(self) -> bool: ...

    async def close(self, timeout_s: float) -> None: ...


def state_name(state: Any) -> str:
    """`READY` for `VersionState.READY` or `"READY"`."""
    return str(getattr(state, "value", state))


@dataclass(frozen=True, slots=True)
class Edge:
    """App-wide objects the routes use, built once by the lifespan in `server/app.py`."""

    settings: Settings
    registry: Registry
    metrics: Metrics
    inflight: InflightRequests
    request_log: RequestLog
    """Request events (errors, sampled successes) of the inference fast lane."""
    request_metrics: RequestMetrics
    features: FeatureJoin
    """Stored features for v1 records (`server/features/`): the configured store behind its
    local cache, gatherer and circuit breaker."""
    shadow: ShadowRunner


async def _edge(request: Request) -> Edge:
    edge: Edge = request.app.state.edge
    return edge


# One async provider: FastAPI would run a plain `def` one in its thread pool, and
# one dependency instead of four keeps the per-request resolution cost down.
EdgeDep = Annotated[Edge, Depends(_edge)]


@dataclass(frozen=True, slots=True)
class AdminPlane:
    """What the admin routes use, built by the lifespan when an admin token is configured."""

    tokens: AdminTokens
    controller: Controller | None
    """None when the app runs over a registry that is not the `ModelRegistry` (edge tests)."""


@dataclass(frozen=True, slots=True)
class AdminCall:
    """An authenticated admin request: the controller and who is calling."""

    controller: Controller
    caller: Caller


async def _admin_caller(request: Request) -> Caller:
    plane: AdminPlane = request.app.state.admin
    name = plane.tokens.identify(request.headers.get("authorization"))
    return Caller(name, request_id_of(request.scope) or None)


async def _admin_call(request: Request) -> AdminCall:
    caller = await _admin_caller(request)
    controller = request.app.state.admin.controller
    if controller is None:
        raise ModelNotReady("model changes need the model registry, which this app does not run")
    return AdminCall(controller, caller)


AdminDep = Annotated[AdminCall, Depends(_admin_call)]
"""Every admin route's first step: 401 without a bearer token, 403 with an unknown one."""
AdminCallerDep = Annotated[Caller, Depends(_admin_caller)]
"""The same check for admin routes that change no model version (feature rows)."""

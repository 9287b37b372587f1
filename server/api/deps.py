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
from server.api.body_budget import BodyBudget
from server.api.context import request_id_of
from server.api.request_log import RequestLog
from server.contract.manifest import ModelManifest
from server.dataplane.inflight import InflightRequests
from server.dataplane.plane import DataPlane, Router
from server.errors import ModelNotReady
from server.evidence.load import LoadEvidence
from server.features.join import FeatureJoin
from server.metrics.instruments import Metrics
from server.protocol.schema import ModelSchema
from server.registry.control_api import Caller, ControlAPI
from server.release.driver import ReleaseDriver
from server.request import InferenceRequest, Tensors
from server.settings import Settings
from server.shadow import ShadowRunner


class ServedModel(Protocol):
    """One loaded, routable model version (`ServedVersion`), as metadata and readiness read it."""

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


class Registry(Router, Protocol):
    """The engine's `ModelRegistry` as the edge uses it (routing: `Router`, for the data plane)."""

    async def start(self) -> None: ...

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
    plane: DataPlane
    """The inference core the fast lane decodes into and encodes out of."""
    request_log: RequestLog
    """Request events (errors, sampled successes) of the inference fast lane."""
    bodies: BodyBudget
    """Bytes of request bodies in flight, shared with the route gate (`body_budget.py`)."""

    @property
    def inflight(self) -> InflightRequests:
        """Inference requests in progress and the draining flag (health, graceful shutdown)."""
        return self.plane.inflight

    @property
    def features(self) -> FeatureJoin:
        return self.plane.features

    @property
    def shadow(self) -> ShadowRunner:
        return self.plane.shadow


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
    controller: ControlAPI | None
    """None when the app runs over a registry that is not the `ModelRegistry` (edge tests)."""
    releases: ReleaseDriver | None = None
    """Creates, reads and aborts releases; None with `controller`."""


@dataclass(frozen=True, slots=True)
class AdminCall:
    """An authenticated admin request: the controller and who is calling."""

    controller: ControlAPI
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

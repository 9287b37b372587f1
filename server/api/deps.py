"""What the HTTP edge needs from the engine, as Protocols, and the FastAPI dependency aliases.

`server/registry/` (`ModelRegistry`, `ServedVersion`) implements these; tests
pass small fakes. Routes reach app-wide objects only through the aliases below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from server.api.inflight import InflightRequests
from server.api.request_metrics import RequestMetrics
from server.features.join import FeatureJoin
from server.metrics.instruments import Metrics
from server.protocol.schema import ModelSchema
from server.registry.manifest import ModelManifest
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
        """READY | LOADING | UNAVAILABLE | FAILED (an Enum or its string value)."""
        ...

    @property
    def reason(self) -> str | None: ...


class Registry(Protocol):
    """The engine's `ModelRegistry` as the edge uses it."""

    async def start(self) -> None: ...

    def acquire(self, name: str, version: int | None = None,
                routing_key: str | None = None) -> ServedModel:
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

"""`ControlAPI`: the one interface to query and change the control state (control path).

The admin routes, the repository extension (and any later caller: a gRPC repository service,
a release driver) call this Protocol and nothing below it; `server/registry/controller.py`
implements it over the registry, the control-state store and the audit log. Every change, and
every refusal of one, is audited with the caller's name. A change is prepare (load, verify and
warm up what it needs; nothing takes traffic yet), then commit (compare-and-set the desired
state, apply it); a refusal at either step leaves the routing as it was. The answers are plain
values a transport encodes as it likes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.contract.manifest import ModelManifest
from server.registry.audit import AuditEntry
from server.registry.control_state import ModelControl, ReplicaStatus, ShadowPolicy
from server.registry.promotion import PromotionRequirements
from server.registry.repository import Rescan
from server.registry.versions import VersionStatus
from server.routing.agreement import Agreement


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a change: the admin token's name, and the request it came in."""

    name: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation did; `changed` is False for a no-op."""

    action: str
    model: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    changed: bool
    revision: int
    forced: bool = False
    """Made despite requirements that fell short (`detail` says which)."""
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingState:
    """What this replica applied for one model."""

    revision: int
    weights: Mapping[int, int]
    """Effective share (percent) of unpinned requests per version."""
    fallbacks: tuple[str, ...]
    """Why part of the policy is not served as written (a canary still loading)."""
    shadow_ready: bool
    shadow_agreement: Agreement | None = None
    """The rule the shadow's answers are compared by, as applied (None: no shadow route here)."""


@dataclass(frozen=True, slots=True)
class VersionView:
    """One version's state, costs, and the aliases that name it."""

    status: VersionStatus
    aliases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelState:
    """One model: its desired state, what serves, and every version's state."""

    name: str
    serving: int | None
    """The version unpinned requests go to by default (`production`); a traffic split sends
    the shares `routing.weights` names elsewhere."""
    control: ModelControl
    """The desired state applied: aliases, loaded, retained, stopped, traffic, shadow."""
    previous_production: int | None
    routing: RoutingState
    versions: tuple[VersionView, ...]


@dataclass(frozen=True, slots=True)
class Models:
    """Every model at one applied control revision."""

    revision: int
    models: tuple[ModelState, ...]


@dataclass(frozen=True, slots=True)
class Replicas:
    """The replicas that reported recently, and the revision this one applied."""

    revision: int
    replicas: tuple[ReplicaStatus, ...]


class ControlAPI(Protocol):
    """Queries and changes of the desired state; each change audited, done or refused."""

    # --- queries ---------------------------------------------------------------------------------

    async def models(self) -> Models: ...

    async def model(self, name: str) -> ModelState:
        """ModelNotFound if the repository scan did not find it."""
        ...

    async def index(self, caller: Caller) -> list[VersionStatus]:
        """Every version in the repository, rescanned first (a rescan that finds something is audited)."""
        ...

    async def replicas(self) -> Replicas: ...

    async def audit(
        self,
        model: str | None = None,
        alias: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest `limit` audit entries matching every filter, oldest first."""
        ...

    async def evidence(self, model: str, version: int) -> Mapping[str, object]:
        """What `version` has shown against production (the figures a guarded promotion reads)."""
        ...

    async def manifest(self, model: str, version: int) -> ModelManifest:
        """`version`'s model.json (ModelNotFound if the repository scan did not find it)."""
        ...

    # --- changes ---------------------------------------------------------------------------------

    async def load(self, caller: Caller, model: str, version: int) -> Outcome: ...

    async def unload(self, caller: Caller, model: str, version: int) -> Outcome:
        """Refused (409) while an alias, a traffic weight or the shadow names it, or it serves."""
        ...

    async def set_alias(self, caller: Caller, model: str, alias: str, version: int) -> Outcome: ...

    async def delete_alias(self, caller: Caller, model: str, alias: str) -> Outcome: ...

    async def rollback(self, caller: Caller, model: str) -> Outcome: ...

    async def promote(
        self,
        caller: Caller,
        model: str,
        version: int,
        requirements: PromotionRequirements | None = None,
        force: bool = False,
    ) -> Outcome: ...

    async def set_traffic(self, caller: Caller, model: str, weights: dict[str, int]) -> Outcome: ...

    async def clear_traffic(self, caller: Caller, model: str) -> Outcome: ...

    async def set_shadow(self, caller: Caller, model: str, policy: ShadowPolicy) -> Outcome: ...

    async def clear_shadow(self, caller: Caller, model: str) -> Outcome: ...

    async def set_capture(self, caller: Caller, model: str, share: float | None) -> Outcome:
        """Capture `share` of the model's answered requests fleet-wide (None: the server default)."""
        ...

    async def load_model(self, caller: Caller, model: str) -> Outcome:
        """Bring a model (back) into service (the repository extension's load)."""
        ...

    async def unload_model(self, caller: Caller, model: str) -> Outcome:
        """Take a model out of service (the repository extension's unload)."""
        ...

    async def rescan(self, caller: Caller) -> Rescan: ...

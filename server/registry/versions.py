"""Version slots: every `<model>/<version>` the repository scan found, with its lifecycle state.

The registry owns the slots and changes them only on the control path; the edge and the admin
API read them through `statuses()`, and the routing table never looks at them.

Lifecycle: AVAILABLE (on disk) -> LOADING -> READY -> DRAINING (out of the routing table,
its routed requests finishing) -> UNLOADED; a load that fails at any step ends FAILED with
the reason, and a later load may be tried again from FAILED or UNLOADED.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from server.registry.served import ServedVersion


class VersionState(enum.StrEnum):
    AVAILABLE = "AVAILABLE"
    """In the repository, never loaded by this process."""
    LOADING = "LOADING"
    """Being read, verified, opened and warmed up."""
    READY = "READY"
    """Loaded, warmed up, taking requests."""
    FAILED = "FAILED"
    """Tried and failed to load; `reason` says why."""
    DRAINING = "DRAINING"
    """Out of the routing table; the requests routed to it before are finishing."""
    UNLOADED = "UNLOADED"
    """Was loaded; its session and memory are released."""


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version found in the repository, its state and (while loaded) what it costs."""

    name: str
    version: int
    state: VersionState
    reason: str | None = None
    loaded_at: str | None = None
    """UTC time the current (or last) load finished, ISO 8601."""
    load_duration_s: float | None = None
    """Read + sha256 + session + graph check + warm-up of the current (or last) load."""
    provider: str | None = None
    """Execution provider of the loaded session."""
    memory_bytes: int | None = None
    """Process RSS growth its load caused (session, weights, arenas after warm-up)."""
    inflight: int = 0
    """Requests routed to it and not answered yet (including while it drains)."""


@dataclass(slots=True)
class VersionSlot:
    """One version found in the repository: its state, and its `ServedVersion` while loaded."""

    state: VersionState = VersionState.AVAILABLE
    reason: str | None = None
    served: ServedVersion | None = None
    draining: list[ServedVersion] = field(default_factory=list)
    """Loads of this version that left the routing table and are finishing their requests."""
    loading: asyncio.Future[bool] | None = None
    """The load in progress: a second caller awaits it instead of loading twice."""
    loaded_at: str | None = None
    load_duration_s: float | None = None
    provider: str | None = None
    memory_bytes: int | None = None

    @property
    def routable(self) -> bool:
        return self.state is VersionState.READY and self.served is not None

    def status(self, name: str, version: int) -> VersionStatus:
        inflight = sum(s.leases for s in self.draining)
        if self.served is not None:
            inflight += self.served.leases
        return VersionStatus(
            name,
            version,
            self.state,
            self.reason,
            self.loaded_at,
            self.load_duration_s,
            self.provider,
            self.memory_bytes,
            inflight,
        )

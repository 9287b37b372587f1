"""Version slots: every `<model>/<version>` the repository scan found, with its lifecycle state.

The registry owns the slots and changes them only on the control path; the edge reads them
through `statuses()` (metadata, readiness) and the routing table never looks at them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.registry.served import ServedVersion


class VersionState(enum.StrEnum):
    READY = "READY"
    """Loaded, warmed up, taking requests."""
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"
    """In the repository but not loaded (not the serving version, or unloaded)."""
    FAILED = "FAILED"
    """Tried and failed to load; `reason` says why."""


@dataclass(frozen=True, slots=True)
class VersionStatus:
    name: str
    version: int
    state: VersionState
    reason: str | None = None


@dataclass(slots=True)
class VersionSlot:
    """One version found in the repository: its state, and its `ServedVersion` while loaded."""

    state: VersionState = VersionState.UNAVAILABLE
    reason: str | None = None
    served: ServedVersion | None = None

    @property
    def routable(self) -> bool:
        return self.state is VersionState.READY and self.served is not None

"""What the control-state store reports about the stored document (control path): reachability,
verification, refusal, restoration, turned into metrics and audit entries (refusals through
`refusals.py`, shared with release records and evidence).

The store (`redis_control_state.py`) decides and logs; this records, so the store needs neither
the metrics registry nor the audit log.
"""

from __future__ import annotations

import logging
from typing import Protocol

from server.metrics.instruments import Metrics
from server.registry.audit import AuditEntry, AuditLog
from server.registry.control_state import ControlSnapshot
from server.registry.refusals import Refusals

log = logging.getLogger(__name__)

RESTORE_ACTION = "restore"
"""The audit action of a control document written back after it was lost."""


class ControlEvents(Protocol):
    def up(self, up: bool) -> None:
        """The store answers again (True) or stopped answering (False)."""
        ...

    def verified(self) -> None:
        """The stored document verified."""
        ...

    async def rejected(self, revision: int | None, reason: str, print_: str) -> None:
        """A stored document (`revision`, when readable; `print_` its fingerprint) did not verify
        (`reason`) and is not applied."""
        ...

    async def restored(self, restored: ControlSnapshot, from_revision: int) -> None:
        """This replica wrote `restored` back (the routing of `from_revision`) after a loss."""
        ...


class RecordedControlEvents:
    """Metrics for every event; the audit log for restorations and (through `refusals`, rate
    limited) refusals."""

    def __init__(self, metrics: Metrics, audit: AuditLog | None, replica: str, where: str, refusals: Refusals) -> None:
        self._metrics = metrics
        self._audit = audit
        self._replica = replica
        self._where = where
        self._refusals = refusals

    def up(self, up: bool) -> None:
        self._metrics.control_state_up.set(1 if up else 0)

    def verified(self) -> None:
        self._refusals.verified("control", self._where)

    async def rejected(self, revision: int | None, reason: str, print_: str) -> None:
        await self._refusals.refused("control", self._where, print_, reason, revision=revision)

    async def restored(self, restored: ControlSnapshot, from_revision: int) -> None:
        self._metrics.control_document_restored.inc()
        if self._audit is None:
            return
        try:
            await self._audit.append(
                AuditEntry(
                    who=f"replica:{self._replica}",
                    action=RESTORE_ACTION,
                    result="ok",
                    revision=restored.revision,
                    detail=f"the control document was lost from Redis; wrote back the routing of revision "
                    f"{from_revision} as revision {restored.revision}",
                )
            )
        except OSError as error:  # the routing is back either way; the log line says who wrote it
            log.error("the audit log cannot record the restoration (%s)", error.strerror or error)

"""Moving a repository's control state from its file to Redis (control path, at start).

A repository served with the file control state keeps its routing (`production`, traffic,
shadow, history) in `<repository>/.hotserve/control.json` (`HOTSERVE_CONTROL_STATE_PATH`). Once
`HOTSERVE_REDIS_URL` is set the document lives in Redis and the file is no longer read; a Redis
that holds no document yet would otherwise start the fleet from the empty routing, which serves
each model's newest version. So when a replica finds no document in Redis and no live replica
that will write one back (`RedisControlState._missing`), it seeds Redis from the file: written
only if the key is still absent (an existing document is never overwritten), logged, and audited
as `seed`. A file that cannot be read or parsed stops the start with the reason: the replica
refuses to guess rather than serve the newest versions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from server.registry.audit import AuditEntry, AuditLog
from server.registry.control_state import ControlSnapshot, FileControlState

log = logging.getLogger(__name__)

SEED_ACTION = "seed"
"""The audit action of a control document carried into an empty Redis from the file state."""


class ControlSeed(Protocol):
    """Where a store with no document yet takes its first one from."""

    source: str
    """What it is, for log lines and refusals."""

    async def read(self) -> ControlSnapshot | None:
        """The routing to carry over; None when there is none (nothing was ever stored). Raises
        ValueError or ControlStateUnavailable when it exists but cannot be read."""
        ...

    async def seeded(self, stored: ControlSnapshot, from_revision: int) -> None:
        """The store now holds `stored`, carried over from revision `from_revision`."""
        ...


class FileSeed:
    """The file control state this repository used before Redis."""

    def __init__(self, path: Path, audit: AuditLog | None, replica: str) -> None:
        self._file = FileControlState(path)
        self._audit = audit
        self._replica = replica
        self.source = f"the file control state {path}"

    async def read(self) -> ControlSnapshot | None:
        snapshot = await self._file.read()
        return snapshot if snapshot.revision > 0 else None

    async def seeded(self, stored: ControlSnapshot, from_revision: int) -> None:
        if self._audit is None:
            return
        try:
            await self._audit.append(
                AuditEntry(
                    who=f"replica:{self._replica}",
                    action=SEED_ACTION,
                    result="ok",
                    revision=stored.revision,
                    detail=f"Redis held no control document: carried over {self.source} (revision "
                    f"{from_revision}) as revision {stored.revision}; the file is no longer read",
                )
            )
        except OSError as error:  # the routing is carried over either way; the log line says so
            log.error("the audit log cannot record the seed (%s)", error.strerror or error)

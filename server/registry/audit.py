"""The audit log of the control path: every admin change, who made it, and what came of it.

One JSON object per line, appended beside the control state (`audit.jsonl`) and fsynced
before the admin call answers, so an operator can answer "which version held `production`
last Tuesday at 14:00, and who changed it" from the file or through `GET /admin/audit`.
Entries are never rewritten; a torn last line (a crash mid-append) is skipped when read.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.contract.provenance import utc_timestamp

log = logging.getLogger(__name__)

Result = Literal["ok", "noop", "refused", "failed"]
"""ok: changed; noop: already so; refused: invalid for the current state; failed: a load failed."""


class AuditEntry(BaseModel):
    """One admin change (or refused attempt)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    at: str = Field(default_factory=lambda: utc_timestamp("milliseconds"))
    """UTC time, ISO 8601."""
    who: str
    """Name of the admin token used."""
    action: str
    """load, unload, alias, unalias, rollback, promote, traffic, shadow, repository_load,
    repository_unload, rescan."""
    model: str | None = None
    alias: str | None = None
    from_version: int | None = Field(default=None, alias="from")
    """Version the alias (or the model's serving version) named before."""
    to_version: int | None = Field(default=None, alias="to")
    """Version it names after (or that was loaded / unloaded)."""
    result: Result
    detail: str | None = None
    """Why it was refused or failed."""
    forced: bool = False
    """Made despite a guard that would have refused it."""
    revision: int | None = None
    """Control-state revision the change stored."""
    request_id: str | None = None

    def line(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode() + b"\n"


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry) -> None: ...

    async def read(
        self,
        model: str | None = None,
        alias: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest `limit` entries matching every filter given, oldest first."""
        ...


class FileAuditLog:
    """Append-only JSON lines file; each append is flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def append(self, entry: AuditEntry) -> None:
        async with self._lock:
            await asyncio.to_thread(self._append, entry.line())

    async def read(
        self,
        model: str | None = None,
        alias: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        entries = await asyncio.to_thread(self._read)
        matching = [
            e
            for e in entries
            if (model is None or e.model == model)
            and (alias is None or e.alias == alias)
            and (since is None or parse_time(e.at) >= since)
            and (until is None or parse_time(e.at) <= until)
        ]
        return matching[-limit:] if limit > 0 else []

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self) -> list[AuditEntry]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        entries = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(AuditEntry.model_validate_json(line))
            except ValidationError:
                log.warning("audit log %s: line %d is not a valid entry; skipped", self.path, number)
        return entries


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC. ValueError if it is not one."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

"""Where routing decisions live between restarts: aliases per model (control path).

`ControlState` is the seam: the registry reads a `ControlSnapshot` at start and writes
whole snapshots back. `FileControlState` keeps it in one JSON file written atomically
(temp file + fsync + rename), so a crash never leaves half a file; a Redis implementation,
shared by every replica, plugs in behind the same protocol.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

PRODUCTION = "production"
CANARY = "canary"


class ModelControl(BaseModel):
    """Routing state of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aliases: dict[str, PositiveInt] = Field(default_factory=dict)
    """Alias name (`production`, `canary`) -> version."""


class ControlSnapshot(BaseModel):
    """Routing state of every model, as stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelControl] = Field(default_factory=dict)

    def alias(self, model: str, alias: str) -> int | None:
        """The version `alias` names for `model`, or None when unset."""
        control = self.models.get(model)
        return None if control is None else control.aliases.get(alias)

    def with_alias(self, model: str, alias: str, version: int) -> ControlSnapshot:
        """A copy with `model`'s `alias` pointing at `version`."""
        current = self.models.get(model, ModelControl())
        updated = current.model_copy(update={"aliases": {**current.aliases, alias: version}})
        return self.model_copy(update={"models": {**self.models, model: updated}})


class ControlState(Protocol):
    """Durable store of the `ControlSnapshot`."""

    async def read(self) -> ControlSnapshot: ...

    async def write(self, snapshot: ControlSnapshot) -> None: ...


class FileControlState:
    """The snapshot as one JSON file; absent file = no aliases set."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def read(self) -> ControlSnapshot:
        return await asyncio.to_thread(self._read)

    async def write(self, snapshot: ControlSnapshot) -> None:
        await asyncio.to_thread(self._write, snapshot)

    def _read(self) -> ControlSnapshot:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ControlSnapshot()
        try:
            return ControlSnapshot.model_validate_json(raw)
        except ValidationError as error:
            # Refuse to guess: serving "latest" instead of a pinned version could route
            # traffic to the very version an operator rolled back from.
            raise ValueError(f"control state {self.path} is invalid: {error}") from error

    def _write(self, snapshot: ControlSnapshot) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = snapshot.model_dump_json(indent=2).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

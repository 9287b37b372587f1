"""The desired routing state (control path): aliases, traffic and shadow per model, with a revision.

`ControlSnapshot` is what operators change and `registry.apply()` makes true; every path
to the running state (start-up, an admin call, a change published by another replica)
ends in that one `apply`. `ControlState` is the store: `write(snapshot, expected_revision)`
is a compare-and-set (a stale writer gets `ControlConflict`), `watch()` yields each newer
snapshot. `FileControlState` keeps one JSON file written atomically (temp file + fsync +
rename), so a crash never leaves half a file; a Redis implementation, shared by every
replica, plugs in behind the same protocol.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from server.contract.aliases import PRODUCTION as PRODUCTION
from server.contract.provenance import utc_timestamp
from server.errors import ControlConflict, ControlStateUnavailable

HISTORY_LIMIT = 50
"""Production changes kept per model (rollback needs the previous one; more helps audits)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProductionChange(_Frozen):
    """One change of a model's `production` alias."""

    version: PositiveInt
    previous: PositiveInt | None = None
    at: str
    """UTC time of the change, ISO 8601."""
    by: str | None = None
    """Who made it (the admin token's name)."""


class ShadowPolicy(_Frozen):
    """A version that receives a copy of a share of unpinned traffic; its answers are only compared."""

    version: PositiveInt
    share: float = Field(default=1.0, gt=0.0, le=1.0)
    tolerance: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """Largest absolute difference of the prediction still counted as agreement; None: by the
    models' task (`server/routing/agreement.py`)."""
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    """Decision threshold: when set, agreement means both answers fall on the same side of it
    (it wins over `tolerance`); None: by the models' task."""


class ModelControl(_Frozen):
    """Desired routing state of one model."""

    aliases: dict[str, PositiveInt] = Field(default_factory=dict)
    """Alias name (`production`, `canary`, any other) -> version."""
    loaded: list[PositiveInt] = Field(default_factory=list)
    """Versions an operator loaded explicitly (ascending), kept loaded beside the aliased ones."""
    retained: PositiveInt | None = None
    """The previous `production` version, kept loaded so a rollback is instant
    (`HOTSERVE_KEEP_PREVIOUS_LOADED`); replaced by the next promotion."""
    stopped: bool = False
    """Taken out of service as a whole (the repository extension's unload): nothing of it is
    loaded and its requests get 503 until it is loaded again."""
    traffic: dict[str, NonNegativeInt] = Field(default_factory=dict)
    """Weights (summing to 100) over aliases or version numbers for unpinned requests;
    empty: everything goes to `production`."""
    shadow: ShadowPolicy | None = None
    capture: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    """Share of this model's answered requests captured (`server/capture/`), fleet-wide; None: each
    server's `capture_sample`."""
    history: list[ProductionChange] = Field(default_factory=list)
    """Past `production` changes, oldest first, at most `HISTORY_LIMIT`."""

    def wanted(self) -> set[int]:
        """Versions this state wants loaded: aliased, explicitly loaded, retained, named by the
        traffic policy or as shadow; none if stopped."""
        if self.stopped:
            return set()
        retained = {self.retained} if self.retained is not None else set()
        traffic = {int(t) for t in self.traffic if t.isdigit() and int(t) > 0}
        shadow = {self.shadow.version} if self.shadow is not None else set()
        return {*self.aliases.values(), *self.loaded, *retained, *traffic, *shadow}


class ControlSnapshot(_Frozen):
    """Desired routing state of every model, as stored; `revision` grows by one per write."""

    revision: NonNegativeInt = 0
    models: dict[str, ModelControl] = Field(default_factory=dict)

    def model(self, name: str) -> ModelControl:
        return self.models.get(name) or ModelControl()

    def alias(self, model: str, alias: str) -> int | None:
        """The version `alias` names for `model`, or None when unset."""
        return self.model(model).aliases.get(alias)

    def with_model(self, name: str, control: ModelControl) -> ControlSnapshot:
        """A copy with `name`'s state replaced (same revision: `write` assigns the next one)."""
        return self.model_copy(update={"models": {**self.models, name: control}})

    def with_alias(
        self, model: str, alias: str, version: int, by: str | None = None, serving: int | None = None
    ) -> ControlSnapshot:
        """A copy with `model`'s `alias` pointing at `version`; a `production` change is recorded
        in the model's history. `serving`: the version answering unpinned requests while
        `production` is unset (recorded as the previous one, so a rollback returns to it)."""
        current = self.model(model)
        update: dict[str, object] = {"aliases": {**current.aliases, alias: version}}
        previous = current.aliases.get(alias)
        if alias == PRODUCTION and previous is None:
            previous = serving
        if alias == PRODUCTION and previous != version:
            change = ProductionChange(version=version, previous=previous, by=by, at=utc_timestamp())
            update["history"] = [*current.history, change][-HISTORY_LIMIT:]
        return self.with_model(model, current.model_copy(update=update))

    def without_alias(self, model: str, alias: str) -> ControlSnapshot:
        """A copy with `model`'s `alias` removed."""
        current = self.model(model)
        aliases = {name: v for name, v in current.aliases.items() if name != alias}
        return self.with_model(model, current.model_copy(update={"aliases": aliases}))

    def with_loaded(self, model: str, version: int) -> ControlSnapshot:
        """A copy where `version` of `model` is explicitly loaded."""
        current = self.model(model)
        loaded = sorted({*current.loaded, version})
        return self.with_model(model, current.model_copy(update={"loaded": loaded}))

    def without_loaded(self, model: str, version: int) -> ControlSnapshot:
        """A copy where `version` is neither explicitly loaded nor retained (aliases untouched)."""
        current = self.model(model)
        update: dict[str, object] = {"loaded": [v for v in current.loaded if v != version]}
        if current.retained == version:
            update["retained"] = None
        return self.with_model(model, current.model_copy(update=update))

    def with_retained(self, model: str, version: int | None) -> ControlSnapshot:
        """A copy keeping `version` loaded as the previous production (None: keep none)."""
        current = self.model(model)
        return self.with_model(model, current.model_copy(update={"retained": version}))

    def with_stopped(self, model: str, stopped: bool) -> ControlSnapshot:
        """A copy with `model` taken out of service (True) or back in it (False)."""
        return self.with_model(model, self.model(model).model_copy(update={"stopped": stopped}))

    def previous_production(self, model: str) -> int | None:
        """The version `production` named before its current one (what a rollback returns to)."""
        history = self.model(model).history
        return history[-1].previous if history else None


class ReplicaStatus(_Frozen):
    """What one replica last reported about the routing it applied."""

    replica: str
    revision: int
    reported_at: float
    """Unix time of the report (replicas report on every apply and every reconcile period)."""
    models: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Model -> effective traffic share (percent) per version on that replica."""
    fallbacks: list[str] = Field(default_factory=list)
    """Parts of the policy the replica cannot serve as written (a target not ready there)."""
    failed: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Model -> version -> why its last load failed on that replica (a release stops on it)."""


class ControlState(Protocol):
    """Durable store of the `ControlSnapshot`."""

    async def read(self) -> ControlSnapshot: ...

    async def write(self, snapshot: ControlSnapshot, expected_revision: int) -> ControlSnapshot:
        """Store `snapshot` as revision `expected_revision + 1` if the stored revision is still
        `expected_revision`; else raise `ControlConflict`. Returns what was stored."""
        ...

    def watch(self, after_revision: int) -> AsyncIterator[ControlSnapshot]:
        """Each snapshot newer than the last one seen (starting after `after_revision`), as it
        is written by anyone."""
        ...

    async def report(self, status: ReplicaStatus) -> None:
        """Publish this replica's applied routing for operators (best effort)."""
        ...

    async def replicas(self) -> list[ReplicaStatus]:
        """The replicas that reported recently, with what they applied."""
        ...

    async def withdraw(self, replica: str) -> None:
        """Remove `replica`'s report (it is shutting down cleanly)."""
        ...

    async def close(self) -> None:
        """Release connections (the stored state stays)."""
        ...


class FileControlState:
    """The snapshot as one JSON file; absent file = revision 0, no aliases set.

    `watch()` wakes on this process's writes at once and notices other processes' writes
    by polling the file every `poll_interval_s`.
    """

    def __init__(self, path: Path, poll_interval_s: float = 2.0) -> None:
        self.path = path
        self.poll_interval_s = poll_interval_s
        self._lock = asyncio.Lock()
        self._written = asyncio.Condition()
        self._writes = 0
        self._reported: ReplicaStatus | None = None

    async def read(self) -> ControlSnapshot:
        return await asyncio.to_thread(self._read)

    async def write(self, snapshot: ControlSnapshot, expected_revision: int) -> ControlSnapshot:
        async with self._lock:
            try:
                stored = await asyncio.to_thread(self._compare_and_write, snapshot, expected_revision)
            except ControlStateUnavailable:
                raise
            except OSError as error:  # e.g. a read-only model repository holding the default path
                raise ControlStateUnavailable(
                    f"control state {self.path} cannot be written ({error.strerror or error}); "
                    f"set HOTSERVE_CONTROL_STATE_PATH to a writable file"
                ) from error
        self._writes += 1
        async with self._written:
            self._written.notify_all()
        return stored

    async def watch(self, after_revision: int) -> AsyncIterator[ControlSnapshot]:
        seen = after_revision
        while True:
            writes = self._writes
            try:
                snapshot = await self.read()
            except (ValueError, ControlStateUnavailable):
                snapshot = None  # unparsable or unreadable for now: keep the last routing
            if snapshot is not None and snapshot.revision > seen:
                seen = snapshot.revision
                yield snapshot
                continue
            if writes != self._writes:
                continue  # written here while we were reading: read again
            async with self._written:
                try:
                    await asyncio.wait_for(self._written.wait(), self.poll_interval_s)
                except TimeoutError:
                    pass

    async def report(self, status: ReplicaStatus) -> None:
        self._reported = status  # one process, one replica: nobody else to tell

    async def replicas(self) -> list[ReplicaStatus]:
        return [] if self._reported is None else [self._reported]

    async def withdraw(self, replica: str) -> None:
        if self._reported is not None and self._reported.replica == replica:
            self._reported = None

    async def close(self) -> None:
        return None

    def _read(self) -> ControlSnapshot:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ControlSnapshot()
        except OSError as error:
            raise ControlStateUnavailable(
                f"control state {self.path} cannot be read ({error.strerror or error})"
            ) from error
        try:
            return ControlSnapshot.model_validate_json(raw)
        except ValidationError as error:
            # Refuse to guess: serving "latest" instead of a pinned version could route
            # traffic to the very version an operator rolled back from.
            raise ValueError(f"control state {self.path} is invalid: {error}") from error

    def _compare_and_write(self, snapshot: ControlSnapshot, expected_revision: int) -> ControlSnapshot:
        """Under an exclusive `flock` (other processes, e.g. a second server on the same file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)  # released when the descriptor closes
            current = self._read()
            if current.revision != expected_revision:
                raise ControlConflict(expected_revision, current.revision)
            stored = snapshot.model_copy(update={"revision": expected_revision + 1})
            self._write(stored)
            return stored
        finally:
            os.close(dir_fd)

    def _write(self, snapshot: ControlSnapshot) -> None:
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

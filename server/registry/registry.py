"""`ModelRegistry`: which versions exist, which one serves each model, and their lifecycle.

Control path: `start()` scans the repository, reads the `production` alias of every model
from the control state and loads that version (off the loop: read, sha256, session, graph
check, warm-up). Without an alias the newest version that loads serves, and a failing newer
version is skipped; a pinned alias is honoured exactly — if that version fails the model
serves nothing rather than a version the operator did not choose (an alias naming a version
no longer in the repository is logged and ignored). A failure is logged with
its reason, counted, shown by `statuses()`, and never receives traffic; other models serve.

Request path: `resolve()` is two dict lookups and returns a `ServedVersion`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass

from server.errors import ModelLoadFailed, ModelNotFound, ModelNotReady
from server.metrics.instruments import Metrics
from server.registry.control_state import PRODUCTION, ControlState, FileControlState
from server.registry.loader import load_version
from server.registry.repository import scan_repository, version_dir
from server.registry.served import ServedVersion
from server.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ModelRegistry", "ServedVersion", "VersionState", "VersionStatus"]


class VersionState(str, enum.Enum):
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
class _Slot:
    state: VersionState = VersionState.UNAVAILABLE
    reason: str | None = None
    served: ServedVersion | None = None


class ModelRegistry:
    """Every model version of the repository and the one serving each model."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 control_state: ControlState | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._root = settings.model_repository
        self._control = control_state or FileControlState(
            settings.control_state_path or self._root / ".hotserve" / "control.json")
        self._slots: dict[str, dict[int, _Slot]] = {}
        self._serving: dict[str, ServedVersion] = {}
        self._started = False
        self._closing = False

    async def start(self) -> None:
        """Scan the repository and load each model's serving version (models load concurrently)."""
        found = await asyncio.to_thread(scan_repository, self._root)
        snapshot = await self._control.read()
        self._slots = {name: {v: _Slot() for v in versions} for name, versions in found.items()}
        await asyncio.gather(*(self._start_model(name, snapshot.alias(name, PRODUCTION))
                               for name in found))
        self._started = True
        log.info("model repository %s: %d model(s), serving %s", self._root, len(found),
                 ", ".join(f"{s.name} v{s.version} on {s.provider}" for s in self._serving.values())
                 or "nothing")

    async def _start_model(self, name: str, pinned: int | None) -> None:
        newest_first = sorted(self._slots[name], reverse=True)
        if pinned is not None and pinned not in self._slots[name]:
            log.error("model %r: production alias names version %d, which is not in the "
                      "repository (versions %s); serving the newest that loads instead",
                      name, pinned, sorted(self._slots[name]))
            pinned = None
        for version in [pinned] if pinned is not None else newest_first:
            served = await self._load(name, version)
            if served is not None:
                self._serving[name] = served
                return
        log.error("model %r: no version could be loaded; it answers 503 until one is", name)

    async def _load(self, name: str, version: int) -> ServedVersion | None:
        slot = self._slots[name][version]
        slot.state, slot.reason = VersionState.LOADING, None
        started = time.perf_counter()
        try:
            served = await load_version(version_dir(self._root, name, version), name, version,
                                        self._settings, self._metrics)
        except ModelLoadFailed as error:
            reason = error.message
        except Exception as error:  # a bug or an environment problem: keep the other models
            log.exception("model %r version %d: unexpected error while loading", name, version)
            reason = f"unexpected {type(error).__name__}: {error}"
        else:
            elapsed = time.perf_counter() - started
            slot.state, slot.served = VersionState.READY, served
            self._metrics.model_loads.labels(name, "success").inc()
            self._metrics.model_load_duration.labels(name).observe(elapsed)
            self._metrics.model_ready.labels(name, str(version)).set(1)
            log.info("model %r version %d ready on %s in %.2f s", name, version,
                     served.provider, elapsed)
            return served
        slot.state, slot.reason = VersionState.FAILED, reason
        self._metrics.model_loads.labels(name, "failure").inc()
        self._metrics.model_load_duration.labels(name).observe(time.perf_counter() - started)
        self._metrics.model_ready.labels(name, str(version)).set(0)
        log.error("model %r version %d failed to load: %s", name, version, reason)
        return None

    def resolve(self, name: str, version: int | None = None) -> ServedVersion:
        """The version to run: the serving one, or `version` exactly.

        ModelNotFound for an unknown model or a version not in the repository; ModelNotReady
        for one that exists but is not loaded and ready, or while shutting down.
        """
        if self._closing:
            raise ModelNotReady("server is shutting down")
        if version is None:
            served = self._serving.get(name)
            if served is not None:
                return served
            if name not in self._slots:
                raise ModelNotFound(name)
            raise ModelNotReady(f"model {name!r} has no ready version")
        slots = self._slots.get(name)
        if slots is None:
            raise ModelNotFound(name)
        slot = slots.get(version)
        if slot is None:
            raise ModelNotFound(name, version)
        if slot.served is not None and slot.state is VersionState.READY:
            return slot.served
        detail = f": {slot.reason}" if slot.reason else ""
        raise ModelNotReady(f"model {name!r} version {version} is {slot.state.value}{detail}")

    def statuses(self) -> list[VersionStatus]:
        """Every model version found in the repository with its state (and FAILED reason)."""
        return [VersionStatus(name, version, slot.state, slot.reason)
                for name in sorted(self._slots)
                for version, slot in sorted(self._slots[name].items())]

    @property
    def ready(self) -> bool:
        """`start()` finished, not shutting down, and every model has a ready serving version."""
        return self._started and not self._closing and all(
            name in self._serving for name in self._slots)

    async def close(self, timeout_s: float) -> None:
        """Stop admitting; let queued and running batches finish (at most `timeout_s`); close runtimes."""
        self._closing = True
        loaded = [(name, version, slot) for name, slots in self._slots.items()
                  for version, slot in slots.items() if slot.served is not None]
        results = await asyncio.gather(*(slot.served.close(timeout_s)  # type: ignore[union-attr]
                                         for _, _, slot in loaded))
        for (name, version, slot), drained in zip(loaded, results, strict=True):
            if not drained:
                log.warning("model %r version %d: closed with work still running", name, version)
            slot.served, slot.state = None, VersionState.UNAVAILABLE
            self._metrics.model_ready.labels(name, str(version)).set(0)
        self._serving.clear()

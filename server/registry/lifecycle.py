"""`VersionLifecycle`: moves one version slot through its states (control path, below `registry.py`).

load: read, sha256, session, graph check, warm-up (`loader.py`); a second caller waits for the
load already running instead of loading twice, and loads run one at a time, so each version's
memory cost (RSS growth over its load and warm-up) is measured alone (`memory.py` says how an
unload gives it back). detach: out of the slot, DRAINING, once the registry published a table
without it. retire: wait for its request leases, close batcher, pool and session: UNLOADED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from server.contract.provenance import utc_timestamp
from server.errors import ModelLoadFailed
from server.metrics.instruments import Metrics
from server.registry.loader import load_version
from server.registry.memory import process_rss_bytes
from server.registry.repository import version_dir
from server.registry.served import ServedVersion
from server.registry.versions import VersionSlot, VersionState
from server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Retired:
    """A loaded version taken out of the routing, to be drained and unloaded."""

    slot: VersionSlot
    served: ServedVersion
    since: float


class VersionLifecycle:
    """Loads, detaches and retires the versions of the registry's slots."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._loading = asyncio.Lock()
        self.draining: set[asyncio.Future[list[None]]] = set()
        """Retirements in progress (the registry's close waits for them)."""

    async def load(self, name: str, version: int, slot: VersionSlot) -> bool:
        """Load one version into its slot (or wait for the load already running); True if READY."""
        if slot.loading is not None:
            return await asyncio.shield(slot.loading)
        loading: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        slot.loading = loading
        try:
            loaded = await self._load_alone(name, version, slot)
        except BaseException:
            loading.cancel()
            raise
        finally:
            slot.loading = None
        loading.set_result(loaded)
        return loaded

    async def _load_alone(self, name: str, version: int, slot: VersionSlot) -> bool:
        async with self._loading:
            slot.state, slot.reason = VersionState.LOADING, None
            rss_before = await asyncio.to_thread(process_rss_bytes)
            started = time.perf_counter()
            try:
                served = await load_version(
                    version_dir(self._settings.model_repository, name, version),
                    name,
                    version,
                    self._settings,
                    self._metrics,
                )
            except ModelLoadFailed as error:
                reason = error.message
            except Exception as error:  # a bug or an environment problem: keep the other models
                log.exception("model %r version %d: unexpected error while loading", name, version)
                reason = f"unexpected {type(error).__name__}: {error}"
            else:
                elapsed = time.perf_counter() - started
                rss_after = await asyncio.to_thread(process_rss_bytes)
                slot.state, slot.served = VersionState.READY, served
                slot.loaded_at = utc_timestamp()
                slot.load_duration_s, slot.provider = elapsed, served.provider
                slot.memory_bytes = (
                    max(0, rss_after - rss_before) if rss_before is not None and rss_after is not None else None
                )
                self._metrics.model_loads.labels(name, "success").inc()
                self._metrics.model_load_duration.labels(name).observe(elapsed)
                self._metrics.model_ready.labels(name, str(version)).set(1)
                if slot.memory_bytes is not None:
                    self._metrics.model_memory.labels(name, str(version)).set(slot.memory_bytes)
                log.info(
                    "model %r version %d ready on %s in %.2f s (memory %s)",
                    name,
                    version,
                    served.provider,
                    elapsed,
                    _mib(slot.memory_bytes),
                )
                return True
        slot.state, slot.reason = VersionState.FAILED, reason
        self._metrics.model_loads.labels(name, "failure").inc()
        self._metrics.model_load_duration.labels(name).observe(time.perf_counter() - started)
        self._metrics.model_ready.labels(name, str(version)).set(0)
        log.error("model %r version %d failed to load: %s", name, version, reason)
        return False

    def detach(self, name: str, slots: dict[int, VersionSlot], keep: set[int]) -> list[Retired]:
        """Take loaded versions not in `keep` out of their slots (to be drained by `retire`)."""
        detached = []
        now = time.perf_counter()
        for version, slot in slots.items():
            if slot.served is not None and version not in keep:
                detached.append(Retired(slot, slot.served, now))
                slot.draining.append(slot.served)
                slot.served, slot.state, slot.reason = None, VersionState.DRAINING, None
                self._metrics.model_ready.labels(name, str(version)).set(0)
        return detached

    async def retire(self, retired: list[Retired]) -> None:
        """Drain and unload every retired version (`draining` holds it meanwhile)."""
        if not retired:
            return
        task = asyncio.ensure_future(asyncio.gather(*(self._drain(r) for r in retired)))
        self.draining.add(task)
        try:
            await task
        finally:
            self.draining.discard(task)

    async def _drain(self, retired: Retired) -> None:
        """Wait for the leases of a version that left the routing table, then unload it."""
        served, slot = retired.served, retired.slot
        drained = await served.drain(self._settings.shutdown_grace_s)
        slot.draining.remove(served)
        if slot.state is VersionState.DRAINING and not slot.draining:
            slot.state = VersionState.UNLOADED
            if slot.memory_bytes is not None:
                self._metrics.model_memory.remove(served.name, str(served.version))
        self._metrics.model_unloads.labels(served.name, "drained" if drained else "timeout").inc()
        self._metrics.model_drain_duration.labels(served.name).observe(time.perf_counter() - retired.since)
        if not drained:
            log.warning("model %r version %d: unloaded with work still running", served.name, served.version)
        log.info("model %r version %d drained and unloaded", served.name, served.version)


def _mib(size_bytes: int | None) -> str:
    return "unknown" if size_bytes is None else f"{size_bytes / 2**20:.1f} MiB"

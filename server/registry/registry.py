"""`ModelRegistry`: the versions of the repository, their lifecycle, and the routing table.

Control path, one way in: `apply(snapshot)` makes a `ControlSnapshot` (the desired routing
state) true. Under the control lock it loads what the snapshot routes to (off the loop:
read, sha256, session, graph check, warm-up), builds a new immutable `RoutingTable` and
publishes it by replacing one reference, then drains and unloads the versions nothing routes
to any more, each once its request leases reach zero. Start-up is `scan` + `apply(stored
snapshot)`; a watcher applies every newer snapshot the control state reports (written by an
admin call, by another process, by another replica).

Which version serves unpinned requests: the one the `production` alias names. If that one
fails to load, the version serving before keeps serving (at start-up there is none: the
model serves nothing rather than a version the operator did not choose). Without an alias
the version serving keeps serving, and at start-up the newest version that loads serves
(a failing newer version is skipped). An alias naming a version not in the repository is
logged and ignored. A failure is logged with its reason, counted, shown by `statuses()`,
and never receives traffic; other models serve.

Request path: `acquire()` is one lookup in the published table plus a lease; the edge calls
`release()` on the version once the request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import MappingProxyType

from server.errors import ControlStateUnavailable, ModelLoadFailed, ModelNotFound, ModelNotReady
from server.metrics.instruments import Metrics
from server.registry.control_state import (
    PRODUCTION,
    ControlSnapshot,
    ControlState,
    FileControlState,
    ModelControl,
    ReplicaStatus,
)
from server.registry.loader import load_version
from server.registry.repository import scan_repository, version_dir
from server.registry.served import ServedVersion
from server.registry.versions import VersionSlot, VersionState, VersionStatus
from server.routing.table import ModelRoutes, RoutingTable, ShadowRoute
from server.routing.traffic import resolve_split
from server.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ModelRegistry", "ServedVersion", "VersionState", "VersionStatus"]


def control_state_for(settings: Settings, metrics: Metrics) -> ControlState:
    """Redis (shared by the fleet) when `redis_url` is set, else the local file."""
    metrics.control_state_up.set(1)
    if settings.redis_url is not None:
        from server.registry.redis_control_state import RedisControlState

        return RedisControlState(settings.redis_url.get_secret_value(),
                                 key_prefix=settings.control_key_prefix,
                                 timeout_s=settings.control_redis_timeout_ms / 1000.0,
                                 reconcile_interval_s=settings.control_reconcile_interval_s,
                                 on_up_change=lambda up: metrics.control_state_up.set(1 if up else 0))
    return FileControlState(settings.control_state_path or settings.model_repository / ".hotserve" /
                            "control.json", poll_interval_s=settings.control_poll_interval_s)


class ModelRegistry:
    """Every model version of the repository, the routing table over the loaded ones, and `apply`."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 control_state: ControlState | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._root = settings.model_repository
        self.control: ControlState = control_state or control_state_for(settings, metrics)
        """Where the desired state is stored; admin operations write it, then `apply` it."""
        self._slots: dict[str, dict[int, VersionSlot]] = {}
        self._table = RoutingTable()
        self._applied = ControlSnapshot()
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task[bool]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False

    # --- control path -----------------------------------------------------------------------

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises control operations (held by `apply`; admin read-modify-write cycles)."""
        return self._lock

    @property
    def table(self) -> RoutingTable:
        """The published routing table."""
        return self._table

    @property
    def applied(self) -> ControlSnapshot:
        """The last snapshot `apply` made true."""
        return self._applied

    async def start(self) -> None:
        """Scan the repository, apply the stored control snapshot, then follow its changes."""
        found = await asyncio.to_thread(scan_repository, self._root)
        self._slots = {name: {v: VersionSlot() for v in versions} for name, versions in found.items()}
        await self.apply(await self._read_at_start())
        self._started = True
        log.info("model repository %s: %d model(s), serving %s", self._root, len(found),
                 ", ".join(f"{r.name} v{r.default.version} on {r.default.provider}"
                           for r in self._table.models.values() if r.default is not None)
                 or "nothing")
        self._watcher = asyncio.create_task(self._follow(), name="hotserve-control-watch")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="hotserve-control-report")

    async def _read_at_start(self) -> ControlSnapshot:
        """The stored routing; while the store does not answer, retry (never guess "latest")."""
        deadline = time.monotonic() + self._settings.control_start_timeout_s
        backoff = 0.1
        while True:
            try:
                return await self.control.read()
            except ControlStateUnavailable as error:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"{error}; gave up after control_start_timeout_s="
                                       f"{self._settings.control_start_timeout_s}") from error
                log.warning("%s; retrying (the server is not ready until it has the routing)", error)
            await asyncio.sleep(backoff)  # retry backoff, not synchronisation
            backoff = min(2.0, backoff * 2)

    async def apply(self, snapshot: ControlSnapshot) -> RoutingTable:
        """Make `snapshot` the running state; returns the routing table it published.

        Loads concurrently across models; versions no longer routed to are drained and
        unloaded before this returns (outside the lock: new control operations need not wait).
        """
        async with self._lock:
            if self._closing:
                raise ModelNotReady("server is shutting down")
            names = sorted(self._slots)
            defaults = await asyncio.gather(*(self._apply_model(name, snapshot.model(name),
                                                                snapshot.routed_versions(name))
                                              for name in names))
            retired: list[ServedVersion] = []
            models: dict[str, ModelRoutes] = {}
            for name, default in zip(names, defaults, strict=True):
                control = snapshot.model(name)
                aliases = {alias: v for alias, v in control.aliases.items() if v in self._slots[name]}
                keep = snapshot.routed_versions(name) | ({default.version} if default else set())
                retired += self._detach(name, keep)
                routable = {v: slot.served for v, slot in self._slots[name].items()
                            if slot.routable and slot.served is not None}
                resolved = resolve_split(control.traffic, aliases, routable, default)
                for fallback in resolved.fallbacks:
                    log.warning("model %r traffic: %s", name, fallback)
                shadow = None
                if control.shadow is not None:
                    shadow_served = routable.get(control.shadow.version)
                    if shadow_served is None:
                        log.warning("model %r: shadow version %d is not ready; no copies are sent",
                                    name, control.shadow.version)
                    else:
                        shadow = ShadowRoute(shadow_served, control.shadow.share,
                                             control.shadow.tolerance, control.shadow.threshold)
                models[name] = ModelRoutes(
                    name=name, default=default, aliases=MappingProxyType(aliases),
                    versions=MappingProxyType(routable), split=resolved.split,
                    weights=MappingProxyType(resolved.weights), fallbacks=resolved.fallbacks,
                    shadow=shadow)
            table = RoutingTable(revision=snapshot.revision, models=MappingProxyType(models))
            self._table = table  # publish: one reference swap
            self._applied = snapshot
            self._metrics.control_revision.set(snapshot.revision)
            for name, routes in models.items():
                for version in routes.versions:
                    self._metrics.traffic_weight.labels(name, str(version)).set(
                        routes.weights.get(version, 0))
        await self._report()
        if retired:
            await asyncio.gather(*(self._drain(served) for served in retired))
        return table

    async def _report(self) -> None:
        """Tell operators (through the control store) which routing this replica applied."""
        table = self._table
        status = ReplicaStatus(
            replica=self._settings.replica_id, revision=table.revision, reported_at=time.time(),
            models={name: {str(v): w for v, w in routes.weights.items()}
                    for name, routes in table.models.items()},
            fallbacks=[f"{name}: {f}" for name, routes in table.models.items() for f in routes.fallbacks])
        try:
            await self.control.report(status)
        except Exception:  # reporting is for operators; routing never depends on it
            log.exception("reporting the applied routing failed")

    async def _heartbeat(self) -> None:
        """Report the applied routing every reconcile period, so operators see live replicas."""
        while True:
            await asyncio.sleep(self._settings.control_reconcile_interval_s)  # a period, not a sync
            await self._report()

    async def _follow(self) -> None:
        """Apply every newer snapshot the control state reports, until closed."""
        async for snapshot in self.control.watch(self._applied.revision):
            if snapshot.revision <= self._applied.revision:
                continue  # already applied (e.g. by the admin call that wrote it)
            try:
                await self.apply(snapshot)
            except ModelNotReady:
                return  # shutting down
            except Exception:
                log.exception("applying control revision %d failed; keeping revision %d",
                              snapshot.revision, self._applied.revision)

    async def _apply_model(self, name: str, control: ModelControl,
                           routed: set[int]) -> ServedVersion | None:
        """Load what `control` routes to (`routed`); return the version unpinned requests go to
        when no traffic policy splits them (the `production` version)."""
        slots = self._slots[name]
        for version in sorted(routed - set(slots)):
            log.error("model %r: the routing names version %d, which is not in the repository "
                      "(versions %s); ignored", name, version, sorted(slots))
        targets = sorted(routed & set(slots), reverse=True)
        for version in targets:
            if not slots[version].routable:
                await self._load(name, version)
        current = self._table.lookup(name)
        pinned = control.aliases.get(PRODUCTION)
        if pinned is not None and pinned in slots:
            if slots[pinned].routable:
                return slots[pinned].served
            if current is not None:
                log.error("model %r: production version %d is not ready; version %d keeps serving",
                          name, pinned, current.version)
            else:
                log.error("model %r: production version %d could not be loaded; the model "
                          "answers 503 until it is", name, pinned)
            return current
        if current is not None and self._table.serves(current):
            return current
        for version in sorted(slots, reverse=True):
            slot = slots[version]
            if slot.routable or (slot.state is not VersionState.FAILED and await self._load(name, version)):
                return slot.served
        log.error("model %r: no version could be loaded; it answers 503 until one is", name)
        return None

    async def _load(self, name: str, version: int) -> bool:
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
            return True
        slot.state, slot.reason = VersionState.FAILED, reason
        self._metrics.model_loads.labels(name, "failure").inc()
        self._metrics.model_load_duration.labels(name).observe(time.perf_counter() - started)
        self._metrics.model_ready.labels(name, str(version)).set(0)
        log.error("model %r version %d failed to load: %s", name, version, reason)
        return False

    def _detach(self, name: str, keep: set[int]) -> list[ServedVersion]:
        """Take loaded versions not in `keep` out of their slots (they will be drained)."""
        detached = []
        for version, slot in self._slots[name].items():
            if slot.served is not None and version not in keep:
                detached.append(slot.served)
                slot.served, slot.state, slot.reason = None, VersionState.UNAVAILABLE, None
                self._metrics.model_ready.labels(name, str(version)).set(0)
                with contextlib.suppress(KeyError):
                    self._metrics.traffic_weight.remove(name, str(version))
        return detached

    async def _drain(self, served: ServedVersion) -> bool:
        """Wait for the leases of a version that left the routing table, then unload it."""
        task = asyncio.ensure_future(served.drain(self._settings.shutdown_grace_s))
        self._draining.add(task)
        try:
            drained = await task
        finally:
            self._draining.discard(task)
        if not drained:
            log.warning("model %r version %d: unloaded with work still running", served.name,
                        served.version)
        log.info("model %r version %d drained and unloaded", served.name, served.version)
        return drained

    # --- request path -----------------------------------------------------------------------

    def acquire(self, name: str, version: int | None = None,
                routing_key: str | None = None) -> ServedVersion:
        """The version a request goes to, with a lease taken on it: the caller must `release()` it.

        Unpinned requests follow the model's traffic policy (sticky by `routing_key`).
        ModelNotFound for an unknown model or a version not in the repository; ModelNotReady
        for one that exists but is not loaded and ready, or while shutting down.
        """
        served = self._table.lookup(name, version, routing_key)
        if served is None or self._closing:
            raise self._unroutable(name, version)
        served.lease()
        return served

    def sticky_field(self, name: str) -> str | None:
        """The v1 record field whose value keeps a request on one version under `name`'s traffic
        split (the entity key), or None when no split is set or the model has no entity key."""
        routes = self._table.models.get(name)
        if routes is None or routes.split is None or routes.default is None:
            return None
        features = routes.default.manifest.features
        return None if features is None else features.entity_key

    def shadow_route(self, name: str) -> ShadowRoute | None:
        """Where copies of `name`'s unpinned requests go (None: no shadow, or it is not ready)."""
        routes = self._table.models.get(name)
        return None if routes is None else routes.shadow

    def resolve(self, name: str, version: int | None = None) -> ServedVersion:
        """Like `acquire` without a lease: for metadata and readiness, which run nothing."""
        served = self._table.lookup(name, version)
        if served is None or self._closing:
            raise self._unroutable(name, version)
        return served

    def _unroutable(self, name: str, version: int | None) -> Exception:
        if self._closing:
            return ModelNotReady("server is shutting down")
        slots = self._slots.get(name)
        if slots is None:
            return ModelNotFound(name)
        if version is None:
            return ModelNotReady(f"model {name!r} has no ready version")
        slot = slots.get(version)
        if slot is None:
            return ModelNotFound(name, version)
        detail = f": {slot.reason}" if slot.reason else ""
        return ModelNotReady(f"model {name!r} version {version} is {slot.state.value}{detail}")

    # --- state ------------------------------------------------------------------------------

    def statuses(self) -> list[VersionStatus]:
        """Every model version found in the repository with its state (and FAILED reason)."""
        return [VersionStatus(name, version, slot.state, slot.reason)
                for name in sorted(self._slots)
                for version, slot in sorted(self._slots[name].items())]

    @property
    def ready(self) -> bool:
        """`start()` finished, not shutting down, and every model has a version serving it."""
        return self._started and not self._closing and all(
            self._table.lookup(name) is not None for name in self._slots)

    async def close(self, timeout_s: float) -> None:
        """Stop routing; let routed, queued and running work finish (at most `timeout_s`); unload."""
        self._closing = True
        for task in (self._watcher, self._heartbeat_task):
            if task is not None:
                task.cancel()
        async with self._lock:
            loaded = [slot.served for slots in self._slots.values() for slot in slots.values()
                      if slot.served is not None]
            for name in self._slots:
                self._detach(name, keep=set())
            self._table = RoutingTable(revision=self._table.revision)
        results = await asyncio.gather(*(served.drain(timeout_s) for served in loaded),
                                       *self._draining)
        await self.control.close()
        for served, drained in zip(loaded, results, strict=False):
            if not drained:
                log.warning("model %r version %d: closed with work still running", served.name,
                            served.version)

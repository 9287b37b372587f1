"""`ModelRegistry`: the versions of the repository, their lifecycle, and the routing table.

Control path, one way in: `apply(snapshot)` makes a `ControlSnapshot` (the desired routing
state) true. Under the control lock it loads what the snapshot wants loaded (aliased,
explicitly loaded and retained versions; off the loop: read, sha256, session, graph check,
warm-up), builds a new immutable `RoutingTable` and publishes it by replacing one reference,
then drains and unloads the versions nothing wants any more, each once its request leases
reach zero. Start-up is `scan` + `apply(stored snapshot)`; a watcher applies every newer
snapshot the control state reports (written by another process or replica); an admin
change is `change(edit)`: read the stored snapshot, edit it, compare-and-set it, apply it,
all under the same lock. A snapshot older than the one applied is never applied.

Which version serves unpinned requests: the one the `production` alias names. If that one
fails to load, the version serving before keeps serving (at start-up there is none: the
model serves nothing rather than a version the operator did not choose). Without an alias
the version serving keeps serving, and at start-up the newest version that loads serves
(a failing newer version is skipped). An alias naming a version not in the repository is
logged and ignored. A failure is logged with its reason, counted, shown by `statuses()`,
and never receives traffic; other models serve. A model the snapshot marks `stopped` serves
nothing and does not count against readiness.

`lifecycle.py` moves each version through its states (load, detach, drain, unload).

Request path: `route()` is one lookup in the published table; the data plane
(`server/dataplane/`) leases the versions it names and releases them once the request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from server.errors import (
    ControlConflict,
    ControlStateUnavailable,
    HotserveError,
    ModelNotFound,
    ModelNotReady,
    ShuttingDown,
    VersionNotReady,
)
from server.metrics.instruments import Metrics
from server.registry.control_state import (
    PRODUCTION,
    ControlSnapshot,
    ControlState,
    FileControlState,
    ModelControl,
    ReplicaStatus,
)
from server.registry.lifecycle import Retired, VersionLifecycle
from server.registry.repository import scan_repository
from server.registry.served import ServedVersion
from server.registry.versions import VersionSlot, VersionState, VersionStatus
from server.routing.table import ModelRoutes, Route, RoutingTable, ShadowRoute
from server.routing.traffic import resolve_split
from server.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Change", "ModelRegistry", "Rescan", "ServedVersion", "VersionState", "VersionStatus"]

CHANGE_ATTEMPTS = 3
"""Compare-and-set attempts of one change before a `ControlConflict` reaches the caller."""

Edit = Callable[[ControlSnapshot], ControlSnapshot | None]
"""Turns the stored snapshot into the desired one; None: nothing to change. May raise a
`HotserveError` to refuse the change."""


@dataclass(frozen=True, slots=True)
class Change:
    """What `change()` did: the stored snapshot it edited and the one it stored (None: no-op)."""

    before: ControlSnapshot
    after: ControlSnapshot | None
    drained: asyncio.Future[None]
    """Done once the versions the change took out of the routing table are unloaded."""


@dataclass(frozen=True, slots=True)
class Rescan:
    """Versions a repository scan found new, and versions whose folders are gone."""

    added: list[tuple[str, int]]
    removed: list[tuple[str, int]]

    def describe(self) -> str:
        return f"added {_names(self.added)}; removed {_names(self.removed)}"


def control_state_for(settings: Settings, metrics: Metrics) -> ControlState:
    """Redis (one routing shared by the fleet) when `redis_url` is set, else the local file."""
    metrics.control_state_up.set(1)
    if settings.redis_url is not None:
        from server.registry.redis_control_state import RedisControlState

        return RedisControlState(
            settings.redis_url.get_secret_value(),
            key_prefix=settings.control_key_prefix,
            timeout_s=settings.control_redis_timeout_ms / 1000.0,
            reconcile_interval_s=settings.control_reconcile_interval_s,
            on_up_change=lambda up: metrics.control_state_up.set(1 if up else 0),
        )
    return FileControlState(settings.resolved_control_state_path, poll_interval_s=settings.control_poll_interval_s)


class ModelRegistry:
    """Every model version of the repository, the routing table over the loaded ones, and `apply`."""

    def __init__(self, settings: Settings, metrics: Metrics, control_state: ControlState | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._root = settings.model_repository
        self.control: ControlState = control_state or control_state_for(settings, metrics)
        """Where the desired state is stored; admin operations write it, then `apply` it."""
        self._slots: dict[str, dict[int, VersionSlot]] = {}
        self._table = RoutingTable()
        self._applied = ControlSnapshot()
        self._lock = asyncio.Lock()
        self._model_locks: dict[str, asyncio.Lock] = {}
        self._lifecycle = VersionLifecycle(settings, metrics)
        self._tasks: list[asyncio.Task[None]] = []
        self._reports: set[asyncio.Future[None]] = set()
        self._started = False
        self._closing = False

    # --- control path -----------------------------------------------------------------------

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises control operations (held by `apply`, `change` and `rescan`)."""
        return self._lock

    def model_lock(self, name: str) -> asyncio.Lock:
        """Serialises the admin operations on one model (taken before `lock`, never inside it)."""
        return self._model_locks.setdefault(name, asyncio.Lock())

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
        for name in found:
            self._metrics.model_found(name)
        await self.apply(await self._read_at_start())
        self._started = True
        log.info(
            "model repository %s: %d model(s), serving %s",
            self._root,
            len(found),
            ", ".join(
                f"{r.name} v{r.default.version} on {r.default.provider}"
                for r in self._table.models.values()
                if r.default is not None
            )
            or "nothing",
        )
        self._tasks.append(asyncio.create_task(self._follow(), name="hotserve-control-watch"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="hotserve-control-report"))
        if self._settings.repository_poll_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll(), name="hotserve-repository-poll"))

    async def _read_at_start(self) -> ControlSnapshot:
        """The stored routing; while the store does not answer, retry (never guess "latest")."""
        deadline = time.monotonic() + self._settings.control_start_timeout_s
        backoff = 0.1
        while True:
            try:
                return await self.control.read()
            except ControlStateUnavailable as error:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{error}; gave up after control_start_timeout_s={self._settings.control_start_timeout_s}"
                    ) from error
                log.warning("%s; retrying (the server is not ready until it has the routing)", error)
            await asyncio.sleep(backoff)  # retry backoff, not synchronisation
            backoff = min(2.0, backoff * 2)

    async def _report(self) -> None:
        """Tell operators (through the control store) which routing this replica applied."""
        table = self._table
        status = ReplicaStatus(
            replica=self._settings.replica_id,
            revision=table.revision,
            reported_at=time.time(),
            models={name: {str(v): w for v, w in routes.weights.items()} for name, routes in table.models.items()},
            fallbacks=[f"{name}: {f}" for name, routes in table.models.items() for f in routes.fallbacks],
        )
        try:
            await self.control.report(status)
        except Exception:  # reporting is for operators; routing never depends on it
            log.exception("reporting the applied routing failed")

    async def _heartbeat(self) -> None:
        """Report the applied routing every reconcile period, so operators see live replicas."""
        while True:
            await asyncio.sleep(self._settings.control_reconcile_interval_s)  # a period, not a sync
            await self._report()

    async def apply(self, snapshot: ControlSnapshot) -> RoutingTable:
        """Make `snapshot` the running state; returns the routing table it published.

        Versions no longer wanted are drained and unloaded before this returns (outside the
        lock: new control operations need not wait). A snapshot older than the applied one
        changes nothing.
        """
        async with self._lock:
            table, retired = await self._apply_locked(snapshot)
        await self._lifecycle.retire(retired)
        return table

    async def change(self, edit: Edit) -> Change:
        """Read the stored snapshot, `edit` it, store it (compare-and-set) and apply it, under the
        control lock. Returns once the new routing is published; `Change.drained` completes
        when what it retired is unloaded. A stale read is retried; `ControlConflict` after
        `CHANGE_ATTEMPTS`."""
        for attempt in range(1, CHANGE_ATTEMPTS + 1):
            async with self._lock:
                before = await self.control.read()
                edited = edit(before)
                if edited is None or edited.models == before.models:
                    return Change(before, None, _done())
                try:
                    stored = await self.control.write(edited, before.revision)
                except ControlConflict:
                    if attempt == CHANGE_ATTEMPTS:
                        raise
                    continue
                # Just stored by compare-and-set: the newest state, even if the store was reset
                # to an older revision than the one applied.
                _, retired = await self._apply_locked(stored, newest=True)
            drained = asyncio.ensure_future(self._lifecycle.retire(retired))
            return Change(before, stored, drained)
        raise AssertionError("unreachable")

    async def ensure_loaded(self, name: str, version: int) -> VersionStatus:
        """Load `version` unless it is READY (a FAILED or UNLOADED one is tried again).

        ModelNotFound if the scan did not find it; VersionNotReady (409) with the reason if
        it cannot be loaded. A version nothing wants is unloaded again by the next `apply`.
        """
        slot = self._slot(name, version)
        if not slot.routable and not await self._lifecycle.load(name, version, slot):
            raise VersionNotReady(name, version, slot.state.value, slot.reason)
        return slot.status(name, version)

    async def rescan(self) -> Rescan:
        """Scan the repository again: new versions become AVAILABLE (new models are served as
        at start-up); versions whose folder is gone are forgotten unless loaded."""
        async with self._lock:
            found = await asyncio.to_thread(scan_repository, self._root)
            added = [
                (name, v) for name, versions in found.items() for v in versions if v not in self._slots.get(name, {})
            ]
            removed = [(name, v) for name, slots in self._slots.items() for v in slots if v not in found.get(name, [])]
            for name, version in added:
                if name not in self._slots:
                    self._metrics.model_found(name)
                self._slots.setdefault(name, {})[version] = VersionSlot()
            for name, version in removed:
                slot = self._slots[name][version]
                if slot.served is not None or slot.draining or slot.loading is not None:
                    log.warning(
                        "model %r version %d: its folder is gone; it stays loaded until unloaded", name, version
                    )
                    continue
                del self._slots[name][version]
                if not self._slots[name]:
                    del self._slots[name]
            retired: list[Retired] = []
            if added or removed:
                log.info("repository rescan: %s", Rescan(added, removed).describe())
                _, retired = await self._apply_locked(self._applied)
        await self._lifecycle.retire(retired)
        return Rescan(added, removed)

    async def _apply_locked(
        self, snapshot: ControlSnapshot, newest: bool = False
    ) -> tuple[RoutingTable, list[Retired]]:
        if self._closing:
            raise ShuttingDown()
        if snapshot.revision < self._applied.revision and not newest:
            return self._table, []  # a newer snapshot is applied already: never go back
        names = sorted(self._slots)
        defaults = await asyncio.gather(*(self._apply_model(name, snapshot.model(name)) for name in names))
        retired: list[Retired] = []
        models: dict[str, ModelRoutes] = {}
        for name, default in zip(names, defaults, strict=True):
            control = snapshot.model(name)
            aliases = {
                alias: v for alias, v in control.aliases.items() if v in self._slots[name] and not control.stopped
            }
            keep = (control.wanted() & set(self._slots[name])) | ({default.version} if default else set())
            retired += self._lifecycle.detach(name, self._slots[name], keep)
            routable = {
                v: slot.served for v, slot in self._slots[name].items() if slot.routable and slot.served is not None
            }
            traffic = {} if control.stopped else control.traffic
            targets = aliases if default is None else {PRODUCTION: default.version, **aliases}
            resolved = resolve_split(traffic, targets, routable, default)
            for fallback in resolved.fallbacks:
                log.warning("model %r traffic: %s", name, fallback)
            models[name] = ModelRoutes(
                name=name,
                default=default,
                aliases=MappingProxyType(aliases),
                versions=MappingProxyType(routable),
                split=resolved.split,
                weights=MappingProxyType(resolved.weights),
                fallbacks=resolved.fallbacks,
                shadow=None if control.stopped else self._shadow_route(name, control, routable),
            )
        table = RoutingTable(revision=snapshot.revision, models=MappingProxyType(models))
        self._publish_version_info(self._table, table)
        self._publish_weights(self._table, table)
        self._table = table  # publish: one reference swap
        self._applied = snapshot
        self._metrics.control_revision.set(snapshot.revision)
        report = asyncio.ensure_future(self._report())  # for operators; the change does not wait
        self._reports.add(report)
        report.add_done_callback(self._reports.discard)
        return table, retired

    @staticmethod
    def _shadow_route(name: str, control: ModelControl, routable: dict[int, ServedVersion]) -> ShadowRoute | None:
        if control.shadow is None:
            return None
        served = routable.get(control.shadow.version)
        if served is None:
            log.warning("model %r: shadow version %d is not ready; no copies are sent", name, control.shadow.version)
            return None
        return ShadowRoute(served, control.shadow.share, control.shadow.tolerance, control.shadow.threshold)

    def _publish_weights(self, old: RoutingTable, new: RoutingTable) -> None:
        """`hotserve_traffic_weight_percent`: the effective share of each routable version."""
        gauge = self._metrics.traffic_weight
        fresh = {
            (name, str(v)): routes.weights.get(v, 0) for name, routes in new.models.items() for v in routes.versions
        }
        for name, routes in old.models.items():
            for version in routes.versions:
                if (name, str(version)) not in fresh:
                    with contextlib.suppress(KeyError):
                        gauge.remove(name, str(version))
        for (name, label), weight in fresh.items():
            gauge.labels(name, label).set(weight)

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
                log.exception(
                    "applying control revision %d failed; keeping revision %d",
                    snapshot.revision,
                    self._applied.revision,
                )

    async def _poll(self) -> None:
        """Rescan the repository every `repository_poll_interval_s` (a period, not a wait)."""
        while not self._closing:
            await asyncio.sleep(self._settings.repository_poll_interval_s)
            try:
                await self.rescan()
            except ModelNotReady:
                return
            except Exception:
                log.exception("repository rescan failed")

    async def _apply_model(self, name: str, control: ModelControl) -> ServedVersion | None:
        """Load what `control` wants; return the version unpinned requests should go to."""
        if control.stopped:
            return None
        slots = self._slots[name]
        for alias, version in sorted(control.aliases.items()):
            if version not in slots:
                log.error(
                    "model %r: alias %r names version %d, which is not in the repository (versions %s); ignored",
                    name,
                    alias,
                    version,
                    sorted(slots),
                )
        # A version that failed is tried again only when this model's desired state changed
        # (or by an explicit load), not by every apply of another model's change.
        retry_failed = control != self._applied.model(name)
        for version in sorted(control.wanted() & set(slots), reverse=True):
            slot = slots[version]
            if not slot.routable and (retry_failed or slot.state is not VersionState.FAILED):
                await self._lifecycle.load(name, version, slot)
        current = self._table.lookup(name)
        pinned = control.aliases.get(PRODUCTION)
        if pinned is not None and pinned in slots:
            if slots[pinned].routable:
                return slots[pinned].served
            if current is not None:
                log.error(
                    "model %r: production version %d is not ready; version %d keeps serving",
                    name,
                    pinned,
                    current.version,
                )
                return current
            log.error(
                "model %r: production version %d could not be loaded; the model answers 503 until it is", name, pinned
            )
            return None
        if current is not None and self._table.serves(current):
            return current
        for version in sorted(slots, reverse=True):
            slot = slots[version]
            if slot.routable or (
                slot.state is not VersionState.FAILED and await self._lifecycle.load(name, version, slot)
            ):
                return slot.served
        log.error("model %r: no version could be loaded; it answers 503 until one is", name)
        return None

    def _publish_version_info(self, old: RoutingTable, new: RoutingTable) -> None:
        """`hotserve_model_version_info`: one series per alias -> version of the new table."""
        gauge = self._metrics.model_version_info
        for labels in _alias_labels(old) - _alias_labels(new):
            gauge.remove(*labels)
        for labels in _alias_labels(new):
            gauge.labels(*labels).set(1)

    # --- request path -----------------------------------------------------------------------

    def route(
        self, name: str, version: int | None = None, routing_key: str | None = None, by_entity: bool = False
    ) -> Route:
        """Where a request goes, from the published table (`RoutingTable.route`); the data plane
        leases what it names. ModelNotFound for an unknown model or a version not in the
        repository; ModelNotReady for one that exists but is not loaded and ready; ShuttingDown
        once closing."""
        route = self._table.route(name, version, routing_key, by_entity)
        if route is None or self._closing:
            raise self.unroutable(name, version)
        return route

    def resolve(self, name: str, version: int | None = None) -> ServedVersion:
        """The version a request would be routed to, without a lease: for metadata and
        readiness, which run nothing."""
        served = self._table.lookup(name, version)
        if served is None or self._closing:
            raise self.unroutable(name, version)
        return served

    def unroutable(self, name: str, version: int | None) -> HotserveError:
        """Why a request for `name` (pinned to `version`, or not) has nowhere to go now."""
        if self._closing:
            return ShuttingDown()
        slots = self._slots.get(name)
        if slots is None:
            return ModelNotFound(name)
        if self._applied.model(name).stopped:
            return ModelNotReady(f"model {name!r} is unloaded; load it to serve it again")
        if version is None:
            return ModelNotReady(f"model {name!r} has no ready version")
        slot = slots.get(version)
        if slot is None:
            return ModelNotFound(name, version)
        detail = f": {slot.reason}" if slot.reason else ""
        if slot.state is VersionState.AVAILABLE:
            detail = " (not loaded)"
        return ModelNotReady(f"model {name!r} version {version} is {slot.state.value}{detail}")

    # --- state ------------------------------------------------------------------------------

    def statuses(self) -> list[VersionStatus]:
        """Every model version found in the repository with its state, reason and costs."""
        return [
            slot.status(name, version)
            for name in sorted(self._slots)
            for version, slot in sorted(self._slots[name].items())
        ]

    def versions(self, name: str) -> list[VersionStatus]:
        """The versions of one model (ModelNotFound if the scan did not find it)."""
        slots = self._slots.get(name)
        if slots is None:
            raise ModelNotFound(name)
        return [slot.status(name, version) for version, slot in sorted(slots.items())]

    def status(self, name: str, version: int) -> VersionStatus:
        """One version's state (ModelNotFound if the scan did not find it)."""
        return self._slot(name, version).status(name, version)

    def serving(self, name: str) -> int | None:
        """The version answering `name`'s unpinned requests now; None when none is."""
        served = self._table.lookup(name)
        return None if served is None else served.version

    def _slot(self, name: str, version: int) -> VersionSlot:
        slot = self._slots.get(name, {}).get(version)
        if slot is None:
            raise ModelNotFound(name, version) if name in self._slots else ModelNotFound(name)
        return slot

    @property
    def ready(self) -> bool:
        """`start()` finished, not shutting down, and every model in service has a version serving."""
        return (
            self._started
            and not self._closing
            and all(
                self._table.lookup(name) is not None for name in self._slots if not self._applied.model(name).stopped
            )
        )

    async def close(self, timeout_s: float) -> None:
        """Stop routing; let routed, queued and running work finish (at most `timeout_s`); unload."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        async with self._lock:
            loaded = []
            for name, slots in self._slots.items():
                for version, slot in slots.items():
                    if slot.served is not None:
                        loaded.append(slot.served)
                        slot.served, slot.state = None, VersionState.UNLOADED
                        self._metrics.model_ready.labels(name, str(version)).set(0)
            self._table = RoutingTable(revision=self._table.revision)
        results = await asyncio.gather(*(served.drain(timeout_s) for served in loaded), *self._lifecycle.draining)
        for served, drained in zip(loaded, results, strict=False):
            if not drained:
                log.warning("model %r version %d: closed with work still running", served.name, served.version)
        await self.control.close()


def _alias_labels(table: RoutingTable) -> set[tuple[str, str, str]]:
    labels = set()
    for name, routes in table.models.items():
        aliases = {alias: v for alias, v in routes.aliases.items() if v in routes.versions}
        if routes.default is not None:
            aliases[PRODUCTION] = routes.default.version
        else:
            aliases.pop(PRODUCTION, None)
        labels |= {(name, alias, str(version)) for alias, version in aliases.items()}
    return labels


def _names(versions: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} v{version}" for name, version in versions) or "nothing"


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future

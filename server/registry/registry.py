"""`ModelRegistry`: the versions of the repository, their lifecycle, and the published routing table.

Control path, one way in: `apply(snapshot)` makes a `ControlSnapshot` (the desired routing
state) true. Under the control lock it loads what the snapshot wants loaded (aliased,
explicitly loaded and retained versions; off the loop: read, sha256, session, graph check,
warm-up), then publishes: the pure functions of `server/routing/build.py` decide, from the
snapshot and the READY versions, which version serves, what stays loaded and the new immutable
`RoutingTable`; the registry detaches what is no longer kept, replaces the table's one
reference, and drains and unloads the detached versions once their request leases reach zero.

Start-up is `scan` + `apply(stored snapshot)`; a watcher applies every newer snapshot the
control state reports (written by another process or replica). An operator's change is
prepare, then commit: `prepare(model, versions)` loads, verifies and warms up the versions the
change needs and keeps them loaded until it ends (they take no traffic yet); `commit(edit)`
reads the stored snapshot, edits it, compare-and-sets it and applies it, under the control lock.
What a preparation loaded that the committed state does not want is unloaded when it ends;
nothing is applied again to clean up. A snapshot older than the one applied is never applied.

A failure to load is logged with its reason, counted, shown by `statuses()`, and never
receives traffic; other models serve. A model the snapshot marks `stopped` serves nothing and
does not count against readiness. `lifecycle.py` moves each version through its states (load,
detach, drain, unload); `reporting.py` tells Prometheus and the other replicas what was
published. The control-state store is handed in (`create_app` opens it from the settings).

Request path: `route()` is one lookup in the published table; the data plane
(`server/dataplane/`) leases the versions it names and releases them once the request is answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from server.contract.manifest import ModelManifest
from server.errors import (
    Conflict,
    ControlConflict,
    ControlStateUnavailable,
    HotserveError,
    ModelNotFound,
    ModelNotReady,
    ShuttingDown,
    VersionNotReady,
)
from server.metrics.instruments import Metrics
from server.registry.control_state import ControlSnapshot, ControlState
from server.registry.lifecycle import Retired, VersionLifecycle
from server.registry.reporting import RoutingReports
from server.registry.repository import Rescan, compare_scan, scan_repository, version_dir, without_repository_root
from server.registry.served import ServedVersion
from server.registry.versions import VersionSlot, VersionState, VersionStatus
from server.routing.build import default_version, keep_loaded, model_routes, needs_newest, routing_table
from server.routing.table import ModelRoutes, Route, RoutingTable
from server.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Change", "ModelRegistry", "Preparation", "Rescan", "ServedVersion", "VersionState", "VersionStatus"]

CHANGE_ATTEMPTS = 3
"""Compare-and-set attempts of one change before a `ControlConflict` reaches the caller."""

Edit = Callable[[ControlSnapshot], ControlSnapshot | None]
"""Turns the stored snapshot into the desired one; None: nothing to change. May raise a
`HotserveError` to refuse the change."""


@dataclass(frozen=True, slots=True)
class Change:
    """What `commit()` did: the stored snapshot it edited and the one it stored (None: no-op)."""

    before: ControlSnapshot
    after: ControlSnapshot | None
    drained: asyncio.Future[None]
    """Done once the versions the change took out of the routing table are unloaded."""


@dataclass(frozen=True, slots=True)
class Preparation:
    """Versions of one model loaded, verified and warmed up for a change, kept loaded until the
    preparation ends (a concurrent apply does not unload them before the commit)."""

    model: str
    versions: tuple[int, ...]


class ModelRegistry:
    """Every model version of the repository, the routing table over the loaded ones, and `apply`."""

    def __init__(self, settings: Settings, metrics: Metrics, control: ControlState) -> None:
        self._settings = settings
        self._metrics = metrics
        self._root = settings.model_repository
        self._control = control
        self._slots: dict[str, dict[int, VersionSlot]] = {}
        self._table = RoutingTable()
        self._applied = ControlSnapshot()
        self._lock = asyncio.Lock()
        self._model_locks: dict[str, asyncio.Lock] = {}
        self._pins: Counter[tuple[str, int]] = Counter()
        """Versions held loaded by preparations in progress."""
        self._lifecycle = VersionLifecycle(settings, metrics)
        self._reports = RoutingReports(
            settings.replica_id,
            control,
            metrics,
            settings.control_reconcile_interval_s,
            lambda: self._table,
            self._failed_loads,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False

    # --- control path -----------------------------------------------------------------------

    @property
    def control(self) -> ControlState:
        """Where the desired state is stored; changes write it, then `apply` it."""
        return self._control

    def model_lock(self, name: str) -> asyncio.Lock:
        """Serialises the admin operations on one model (taken before the control lock that
        `apply`, `commit` and `rescan` hold, never inside it)."""
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
        self._reports.start()
        if self._settings.repository_poll_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll(), name="hotserve-repository-poll"))

    async def _read_at_start(self) -> ControlSnapshot:
        """The stored routing; while the store does not answer, retry (never guess "latest")."""
        deadline = time.monotonic() + self._settings.control_start_timeout_s
        backoff = 0.1
        while True:
            try:
                return await self._control.read()
            except ControlStateUnavailable as error:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{error}; gave up after control_start_timeout_s={self._settings.control_start_timeout_s}"
                    ) from error
                log.warning("%s; retrying (the server is not ready until it has the routing)", error)
            await asyncio.sleep(backoff)  # retry backoff, not synchronisation
            backoff = min(2.0, backoff * 2)

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

    @asynccontextmanager
    async def prepare(self, model: str, versions: Iterable[int]) -> AsyncIterator[Preparation]:
        """Load, verify and warm up `versions` of `model` for a change, and keep them loaded
        until the block ends; then what the applied state does not want is unloaded.

        ModelNotFound if the scan did not find one; VersionNotReady (409) with the reason if
        one cannot be loaded (nothing of the change is stored then).
        """
        wanted = sorted(set(versions))
        slots = [(version, self._slot(model, version)) for version in wanted]
        keys = [(model, version) for version in wanted]
        self._pins.update(keys)
        try:
            for version, slot in slots:
                if not slot.routable and not await self._lifecycle.load(model, version, slot):
                    raise VersionNotReady(model, version, slot.state.value, slot.reason)
            yield Preparation(model, tuple(wanted))
        finally:
            self._pins.subtract(keys)
            self._pins = +self._pins  # drop the zero counts
            await self._release(model, wanted)

    async def commit(self, edit: Edit, preparation: Preparation | None = None) -> Change:
        """Read the stored snapshot, `edit` it, store it (compare-and-set) and apply it, under the
        control lock. Returns once the new routing is published; `Change.drained` completes
        when what it retired is unloaded. A stale read is retried; `ControlConflict` after
        `CHANGE_ATTEMPTS`. With nothing to store, a prepared version that became ready still
        takes the place the applied state gives it (e.g. one loaded again after a failure)."""
        for attempt in range(1, CHANGE_ATTEMPTS + 1):
            async with self._lock:
                before = await self._control.read()
                edited = edit(before)
                if edited is None or edited.models == before.models:
                    retired = self._publish_prepared(preparation)
                    return Change(before, None, asyncio.ensure_future(self._lifecycle.retire(retired)))
                try:
                    stored = await self._control.write(edited, before.revision)
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

    async def rescan(self) -> Rescan:
        """Scan the repository again: new versions become AVAILABLE (new models are served as
        at start-up); versions whose folder is gone are forgotten unless loaded."""
        async with self._lock:
            found = await asyncio.to_thread(scan_repository, self._root)
            scan = compare_scan(found, self._slots)
            for name, version in scan.added:
                if name not in self._slots:
                    self._metrics.model_found(name)
                self._slots.setdefault(name, {})[version] = VersionSlot()
            for name, version in scan.removed:
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
            if scan.added or scan.removed:
                log.info("repository rescan: %s", scan.describe())
                # New models load as at start-up; the routing is published over the new slots.
                _, retired = await self._apply_locked(self._applied)
        await self._lifecycle.retire(retired)
        return scan

    async def _apply_locked(
        self, snapshot: ControlSnapshot, newest: bool = False
    ) -> tuple[RoutingTable, list[Retired]]:
        if self._closing:
            raise ShuttingDown()
        if snapshot.revision < self._applied.revision and not newest:
            return self._table, []  # a newer snapshot is applied already: never go back
        retry_failed = {name: snapshot.model(name) != self._applied.model(name) for name in self._slots}
        await asyncio.gather(*(self._load_wanted(name, snapshot, retry_failed[name]) for name in sorted(self._slots)))
        retired = self._publish(snapshot)
        return self._table, retired

    async def _load_wanted(self, name: str, snapshot: ControlSnapshot, retry_failed: bool) -> None:
        """Act: load what `snapshot` wants of `name` (and, with nothing serving and no
        `production`, the newest version that loads, as at start-up)."""
        control = snapshot.model(name)
        if control.stopped:
            return
        slots = self._slots[name]
        # A version that failed is tried again only when this model's desired state changed
        # (or by an explicit load), not by every apply of another model's change.
        for version in sorted(control.wanted() & set(slots), reverse=True):
            slot = slots[version]
            if not slot.routable and (retry_failed or slot.state is not VersionState.FAILED):
                await self._lifecycle.load(name, version, slot)
        if not needs_newest(control, slots.keys(), self._ready(name), self._default(name)):
            return
        for version in sorted(slots, reverse=True):
            slot = slots[version]
            if slot.routable or (
                slot.state is not VersionState.FAILED and await self._lifecycle.load(name, version, slot)
            ):
                return

    def _publish(self, snapshot: ControlSnapshot) -> list[Retired]:
        """Decide the routing from `snapshot` and the READY versions (`routing/build.py`), detach
        what is no longer kept, publish the table (one reference swap); returns the detached."""
        retired: list[Retired] = []
        models: dict[str, ModelRoutes] = {}
        for name in sorted(self._slots):
            slots, control = self._slots[name], snapshot.model(name)
            decision = default_version(control, slots.keys(), self._ready(name), self._default(name))
            for note in decision.notes:
                log.error("model %r: %s", name, note)
            keep = keep_loaded(control, slots.keys(), decision.served) | {v for m, v in self._pins if m == name}
            retired += self._lifecycle.detach(name, slots, keep)
            routes, notes = model_routes(name, control, slots.keys(), self._ready(name), decision.served)
            for note in notes:
                log.warning("model %r: %s", name, note)
            models[name] = routes
        table = routing_table(snapshot.revision, models)
        old, self._table = self._table, table  # publish: one reference swap
        self._applied = snapshot
        self._reports.published(old, table)
        return retired

    def _publish_prepared(self, preparation: Preparation | None) -> list[Retired]:
        """After a no-op commit: publish again only if a prepared version became ready and
        the applied state routes it (a version loaded again after it had failed)."""
        if preparation is None or self._closing:
            return []
        name = preparation.model
        slots = self._slots.get(name, {})
        wanted = keep_loaded(self._applied.model(name), slots.keys(), self._default(name))
        routes = self._table.models.get(name)
        routed = set() if routes is None else set(routes.versions)
        if all(v not in wanted or not slots[v].routable or v in routed for v in preparation.versions):
            return []
        return self._publish(self._applied)

    async def _release(self, model: str, versions: list[int]) -> None:
        """A preparation ended: unload what it loaded that nothing wants (no apply, no load)."""
        if self._closing:
            return
        async with self._lock:
            slots = self._slots.get(model, {})
            keep = keep_loaded(self._applied.model(model), slots.keys(), self._default(model))
            pinned = {v for m, v in self._pins if m == model}
            unwanted = [v for v in versions if v in slots and slots[v].served is not None and v not in keep | pinned]
            retired = self._publish(self._applied) if unwanted else []
        await self._lifecycle.retire(retired)

    def _ready(self, name: str) -> dict[int, ServedVersion]:
        return {v: slot.served for v, slot in self._slots[name].items() if slot.routable and slot.served is not None}

    def _default(self, name: str) -> ServedVersion | None:
        routes = self._table.models.get(name)
        return None if routes is None else routes.default

    async def _follow(self) -> None:
        """Apply every newer snapshot the control state reports, until closed."""
        async for snapshot in self._control.watch(self._applied.revision):
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
        if slot.state in (VersionState.AVAILABLE, VersionState.UNLOADED):
            detail = (
                f" (not loaded): load it to serve pinned requests (`hotserve models load {name} {version}`, "
                f"or POST /admin/models/{name}/versions/{version}/load)"
            )
        return ModelNotReady(f"model {name!r} version {version} is {slot.state.value}{detail}")

    # --- state ------------------------------------------------------------------------------

    def statuses(self) -> list[VersionStatus]:
        """Every model version found in the repository with its state, reason and costs."""
        return [
            slot.status(name, version)
            for name in sorted(self._slots)
            for version, slot in sorted(self._slots[name].items())
        ]

    def _failed_loads(self) -> dict[str, dict[str, str]]:
        """Model -> version -> reason, for every version whose last load here failed."""
        failed: dict[str, dict[str, str]] = {}
        for name, slots in self._slots.items():
            for version, slot in slots.items():
                if slot.state is VersionState.FAILED:
                    failed.setdefault(name, {})[str(version)] = slot.reason or "failed to load"
        return failed

    def versions(self, name: str) -> list[VersionStatus]:
        """The versions of one model (ModelNotFound if the scan did not find it)."""
        slots = self._slots.get(name)
        if slots is None:
            raise ModelNotFound(name)
        return [slot.status(name, version) for version, slot in sorted(slots.items())]

    def status(self, name: str, version: int) -> VersionStatus:
        """One version's state (ModelNotFound if the scan did not find it)."""
        return self._slot(name, version).status(name, version)

    async def manifest(self, name: str, version: int) -> ModelManifest:
        """`version`'s model.json: the loaded one's, else read from the repository (ModelNotFound
        if the scan did not find it; Conflict naming the problem if it cannot be read)."""
        served = self._slot(name, version).served
        if served is not None:
            return served.manifest
        try:
            return await asyncio.to_thread(ModelManifest.read, version_dir(self._root, name, version))
        except (OSError, ValueError) as error:
            reason = without_repository_root(str(error), self._root)
            raise Conflict(f"model {name!r} version {version}: model.json cannot be read: {reason}") from error

    def serving(self, name: str) -> int | None:
        """The version `name`'s unpinned requests go to by default (its `production`; a traffic
        split sends shares elsewhere, see `routes`); None when none is."""
        served = self._default(name)
        return None if served is None else served.version

    def routes(self, name: str) -> ModelRoutes | None:
        """`name`'s published routes (None: not in the table)."""
        return self._table.models.get(name)

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
            and all(self._default(name) is not None for name in self._slots if not self._applied.model(name).stopped)
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
        await self._reports.close()

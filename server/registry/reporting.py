"""What this replica tells operators about the routing it applied (control path, after a publish).

Two audiences: Prometheus (`hotserve_model_version_info` per alias, `hotserve_traffic_weight_percent`
per routable version, `hotserve_control_revision`) and the other replicas' operators, through
the control store's replica reports (`GET /admin/replicas`): one report on every published
table, one every reconcile period as a heartbeat, and a withdrawal on a clean shutdown so a
stopped replica is not listed until its last report goes stale. Routing never depends on any
of it: a report that fails is logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from server.errors import ControlStateUnavailable
from server.metrics.instruments import Metrics
from server.registry.control_state import PRODUCTION, ControlState, ReplicaStatus
from server.routing.table import RoutingTable

log = logging.getLogger(__name__)


class RoutingReports:
    """Gauges and replica reports of the routing tables a registry publishes."""

    def __init__(
        self,
        replica: str,
        control: ControlState,
        metrics: Metrics,
        heartbeat_s: float,
        current: Callable[[], RoutingTable],
        failed: Callable[[], dict[str, dict[str, str]]] = dict,
    ) -> None:
        self._replica = replica
        self._control = control
        self._metrics = metrics
        self._heartbeat_s = heartbeat_s
        self._current = current
        self._failed = failed
        self._pending: set[asyncio.Future[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False

    def published(self, old: RoutingTable, new: RoutingTable) -> None:
        """`new` replaced `old`: update the gauges now, report to the store in the background."""
        _publish_version_info(self._metrics, old, new)
        _publish_weights(self._metrics, old, new)
        self._metrics.control_revision.set(new.revision)
        if self._closed:
            return
        report = asyncio.ensure_future(self._report())  # for operators; the change does not wait
        self._pending.add(report)
        report.add_done_callback(self._pending.discard)

    def start(self) -> None:
        """Report the applied routing every `heartbeat_s`, so operators see live replicas."""
        self._heartbeat = asyncio.create_task(self._beat(), name="hotserve-control-report")

    async def close(self) -> None:
        """Stop reporting and withdraw this replica's report (a clean shutdown is not a lost replica)."""
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        try:
            await self._control.withdraw(self._replica)
        except ControlStateUnavailable as error:  # the report goes stale on its own
            log.warning("replica %r: its routing report stays listed until it goes stale: %s", self._replica, error)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)  # a period, not a synchronisation
            await self._report()

    async def _report(self) -> None:
        table = self._current()
        status = ReplicaStatus(
            replica=self._replica,
            revision=table.revision,
            reported_at=time.time(),
            models={name: {str(v): w for v, w in routes.weights.items()} for name, routes in table.models.items()},
            fallbacks=[f"{name}: {f}" for name, routes in table.models.items() for f in routes.fallbacks],
            failed=self._failed(),
        )
        try:
            await self._control.report(status)
        except Exception:  # reporting is for operators; routing never depends on it
            log.exception("reporting the applied routing failed")


def _publish_version_info(metrics: Metrics, old: RoutingTable, new: RoutingTable) -> None:
    """`hotserve_model_version_info`: one series per alias -> version of the new table."""
    gauge = metrics.model_version_info
    for labels in _alias_labels(old) - _alias_labels(new):
        gauge.remove(*labels)
    for labels in _alias_labels(new):
        gauge.labels(*labels).set(1)


def _publish_weights(metrics: Metrics, old: RoutingTable, new: RoutingTable) -> None:
    """`hotserve_traffic_weight_percent`: the effective share of each routable version."""
    gauge = metrics.traffic_weight
    fresh = {(name, str(v)): routes.weights.get(v, 0) for name, routes in new.models.items() for v in routes.versions}
    for name, routes in old.models.items():
        for version in routes.versions:
            if (name, str(version)) not in fresh:
                with contextlib.suppress(KeyError):
                    gauge.remove(name, str(version))
    for (name, label), weight in fresh.items():
        gauge.labels(name, label).set(weight)


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

"""RoutingReports: gauges of each published table, replica reports to the store, withdrawal on close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest

from server.errors import ControlStateUnavailable
from server.metrics.instruments import Metrics
from server.registry.control_state import ControlSnapshot, ReplicaStatus
from server.registry.reporting import RoutingReports
from server.registry.served import ServedVersion
from server.routing.table import ModelRoutes, RoutingTable
from tests.fakes import EchoRuntime, fake_manifest, until


class RecordingStore:
    """The replica-report half of a `ControlState`, recording what it is told."""

    def __init__(self, withdraw_fails: bool = False) -> None:
        self.reports: list[ReplicaStatus] = []
        self.withdrawn: list[str] = []
        self.withdraw_fails = withdraw_fails

    async def read(self) -> ControlSnapshot:
        return ControlSnapshot()

    async def write(self, snapshot: ControlSnapshot, expected_revision: int) -> ControlSnapshot:
        raise AssertionError("reports never write the snapshot")

    async def watch(self, after_revision: int) -> AsyncIterator[ControlSnapshot]:
        raise AssertionError("reports never watch")
        yield ControlSnapshot()  # an async generator, as the protocol says

    async def report(self, status: ReplicaStatus) -> None:
        self.reports.append(status)

    async def replicas(self) -> list[ReplicaStatus]:
        return self.reports[-1:]

    async def withdraw(self, replica: str) -> None:
        if self.withdraw_fails:
            raise ControlStateUnavailable("replica report in Redis cannot be removed: down")
        self.withdrawn.append(replica)

    async def close(self) -> None:
        return None


def table(revision: int, weights: dict[int, int]) -> RoutingTable:
    versions = {v: ServedVersion(fake_manifest("m", v), EchoRuntime(), Metrics()) for v in weights}
    default = versions[max(weights, key=lambda v: weights[v])]
    routes = ModelRoutes(
        name="m",
        default=default,
        versions=MappingProxyType(versions),
        aliases=MappingProxyType({"canary": 2}),
        weights=MappingProxyType(weights),
    )
    return RoutingTable(revision, MappingProxyType({"m": routes}))


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_published_table_sets_the_gauges_and_is_reported_then_withdrawn_on_close() -> None:
    metrics, store = Metrics(), RecordingStore()
    first, second = table(1, {1: 90, 2: 10}), table(2, {1: 100})
    current = [first]
    reports = RoutingReports("replica-a", store, metrics, heartbeat_s=3600, current=lambda: current[0])
    reports.published(RoutingTable(), first)
    assert sample(metrics, "hotserve_traffic_weight_percent", {"model": "m", "version": "2"}) == 10
    assert sample(metrics, "hotserve_model_version_info", {"model": "m", "alias": "canary", "version": "2"}) == 1
    await until(lambda: len(store.reports) == 1)
    assert (store.reports[0].replica, store.reports[0].revision) == ("replica-a", 1)
    assert store.reports[0].models == {"m": {"1": 90, "2": 10}}

    current[0] = second
    reports.published(first, second)
    assert sample(metrics, "hotserve_traffic_weight_percent", {"model": "m", "version": "2"}) is None
    assert sample(metrics, "hotserve_model_version_info", {"model": "m", "alias": "production", "version": "1"}) == 1
    assert sample(metrics, "hotserve_control_revision", {}) == 2
    await reports.close()
    assert [r.revision for r in store.reports] == [1, 2] and store.withdrawn == ["replica-a"]
    reports.published(second, second)  # after close: gauges only, nothing reported
    assert len(store.reports) == 2


async def test_a_withdrawal_the_store_cannot_take_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    reports = RoutingReports("replica-b", RecordingStore(withdraw_fails=True), Metrics(), 3600, RoutingTable)
    await reports.close()
    assert "replica 'replica-b': its routing report stays listed until it goes stale" in caplog.text

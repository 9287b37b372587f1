"""The data plane without a transport: admission, route + lease, sticky by entity, shadow copies,
feature join, release and the recorded outcome, over real versions (`ServedVersion` on the fake
runtimes) and a routing table the tests build."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import pytest

from server.contract.manifest import FeatureSpec, FeatureView, StoredFeature
from server.dataplane.inflight import InflightRequests
from server.dataplane.plane import DataPlane
from server.dataplane.request_metrics import RequestMetrics
from server.errors import HotserveError, InferenceFailed, ModelNotFound, ModelNotReady, ShuttingDown
from server.features.join import FeatureJoin
from server.features.lookup import FeatureLookup
from server.features.memory_store import MemoryFeatureStore
from server.features.store import EntityWrite
from server.metrics.instruments import Metrics
from server.registry.served import ServedVersion
from server.routing.agreement import Agreement
from server.routing.table import ModelRoutes, Route, RoutingTable, ShadowRoute
from server.routing.traffic import BUCKETS, Split, resolve_split, sticky_bucket
from server.runtime.base import Runtime
from server.shadow import ShadowRunner
from tests.fakes import EchoRuntime, FailingRuntime, SlowRuntime, make_manifest, request, until

VIEW = FeatureView(name="cust", entity_key="cid", features=[StoredFeature(name="c")])
SPEC = FeatureSpec(
    input="x", columns=["a", "b", "c"], request_features=["a", "b"], store_features=["c"], entity_key="cid", view=VIEW
)
X = np.ones((2, 3), np.float32)


class TableRouter:
    """The registry's request-path seam over a table the test publishes (no repository)."""

    def __init__(self) -> None:
        self.table = RoutingTable()

    def route(
        self, name: str, version: int | None = None, routing_key: str | None = None, by_entity: bool = False
    ) -> Route:
        route = self.table.route(name, version, routing_key, by_entity)
        if route is None:
            raise self.unroutable(name, version)
        return route

    def unroutable(self, name: str, version: int | None) -> HotserveError:
        if name not in self.table.models:
            return ModelNotFound(name)
        return ModelNotReady(f"model {name!r} has no ready version")


@dataclass
class Plane:
    plane: DataPlane
    router: TableRouter
    metrics: Metrics
    store: MemoryFeatureStore
    versions: list[ServedVersion]

    def version(self, number: int, runtime: Runtime | None = None) -> ServedVersion:
        manifest = make_manifest("m", [("x", "FP32", [-1, 3])], [("y", "FP32", [-1, 3])], number, features=SPEC)
        served = ServedVersion(manifest, runtime or EchoRuntime(), self.metrics)
        self.versions.append(served)
        return served

    def publish(
        self,
        default: ServedVersion | None,
        *others: ServedVersion,
        traffic: dict[str, int] | None = None,
        shadow: ServedVersion | None = None,
    ) -> None:
        routable = {v.version: v for v in (default, *others) if v is not None}
        aliases = {"canary": others[0].version} if others else {}
        targets = aliases if default is None else {"production": default.version, **aliases}
        resolved = resolve_split(traffic or {}, targets, routable, default)
        routes = ModelRoutes(
            name="m",
            default=default,
            versions=MappingProxyType(routable),
            aliases=MappingProxyType(aliases),
            split=resolved.split,
            shadow=None if shadow is None else ShadowRoute(shadow, share=1.0, agreement=Agreement(tolerance=0.0)),
        )
        self.router.table = RoutingTable(revision=1, models=MappingProxyType({"m": routes}))

    def requests(self, model: str, version: str, code: int) -> float:
        labels = {"model": model, "version": version, "protocol": "test", "code": str(code)}
        return self.metrics.registry.get_sample_value("hotserve_requests_total", labels) or 0.0


@pytest.fixture
async def p() -> AsyncIterator[Plane]:
    metrics = Metrics()
    store = MemoryFeatureStore()
    router = TableRouter()
    shadow = ShadowRunner(metrics, max_pending=8)
    shadow.start()
    plane = DataPlane(
        router=router,
        features=FeatureJoin(FeatureLookup(store, metrics, cache_size=0)),
        shadow=shadow,
        inflight=InflightRequests(metrics),
        request_metrics=RequestMetrics(metrics),
    )
    fixture = Plane(plane, router, metrics, store, [])
    yield fixture
    await shadow.close()
    for served in fixture.versions:
        await served.close(5)


async def test_a_call_holds_its_lease_and_in_flight_slot_until_released_and_records_its_outcome(p: Plane) -> None:
    v1 = p.version(1)
    p.publish(v1)
    call = p.plane.call("test", time.monotonic())
    assert call.route("m") is v1
    assert (v1.leases, p.plane.inflight.count) == (1, 1)
    outputs = await call.infer(request({"x": X}))
    np.testing.assert_array_equal(outputs["y"], X)
    call.release()
    assert (v1.leases, p.plane.inflight.count) == (0, 0)
    assert call.finish(200) >= 0.0
    assert p.requests("m", "1", 200) == 1
    assert v1.leases == 0  # finish after release gives nothing back twice


async def test_a_draining_plane_refuses_before_routing_and_counts_the_refusal_unlabelled(p: Plane) -> None:
    v1 = p.version(1)
    p.publish(v1)
    p.plane.inflight.begin_drain(5.0)
    call = p.plane.call("test", time.monotonic())
    with pytest.raises(ShuttingDown, match="server is shutting down"):
        call.route("m")
    call.finish(503)
    assert (v1.leases, p.plane.inflight.count, p.requests("", "", 503)) == (0, 0, 1)


async def test_an_unroutable_call_gives_its_in_flight_slot_back(p: Plane) -> None:
    p.publish(p.version(1))
    call = p.plane.call("test", time.monotonic())
    with pytest.raises(ModelNotFound):
        call.route("nope")
    call.finish(404)
    assert (p.plane.inflight.count, p.requests("", "", 404)) == (0, 1)


def _key_in(low: int, high: int) -> str:
    """A routing key whose sticky bucket lies in [low, high)."""
    return next(key for key in (f"c-{i}" for i in range(100_000)) if low <= sticky_bucket(key) < high)


async def test_sticky_by_entity_leases_every_version_the_split_can_pick_until_the_body_names_the_key(
    p: Plane,
) -> None:
    v1, v2 = p.version(1), p.version(2)
    p.publish(v1, v2, traffic={"production": 50, "canary": 50})
    call = p.plane.call("test", time.monotonic())
    assert call.route("m", by_entity=True) is None and call.entity_field == "cid"
    assert (v1.leases, v2.leases) == (1, 1)  # a swap while the body arrives strands neither
    p.publish(v2)  # ... like this one: v1 leaves the table
    key = _key_in(0, BUCKETS // 2)  # the production half of the split the call was routed by
    assert call.pick(key) is v1
    assert (v1.leases, v2.leases) == (1, 0)
    await call.infer(request({"x": X}))
    call.release()
    call.finish(200)
    assert (v1.leases, v2.leases, p.requests("m", "1", 200)) == (0, 0, 1)
    again = p.plane.call("test", time.monotonic())
    assert again.route("m", routing_key=key, by_entity=True) is v2  # a key needs no body; the new table
    again.finish(200)
    assert (v2.leases, p.plane.inflight.count) == (0, 0)


async def test_a_call_whose_body_never_came_returns_every_candidate_lease(p: Plane) -> None:
    v1, v2 = p.version(1), p.version(2)
    p.publish(v1, v2, traffic={"production": 50, "canary": 50})
    call = p.plane.call("test", time.monotonic())
    call.route("m", by_entity=True)
    call.finish(499)
    assert (v1.leases, v2.leases, p.plane.inflight.count, p.requests("", "", 499)) == (0, 0, 0, 1)


async def test_a_share_without_a_ready_version_is_refused_once_the_key_picks_it(p: Plane) -> None:
    v1 = p.version(1)
    p.publish(v1)
    routes = p.router.table.models["m"]
    half_refused = Split(bounds=(BUCKETS // 2, BUCKETS), targets=(v1, None))
    p.router.table = RoutingTable(2, MappingProxyType({"m": replace(routes, split=half_refused)}))
    call = p.plane.call("test", time.monotonic())
    assert call.route("m", by_entity=True) is None and v1.leases == 1
    with pytest.raises(ModelNotReady, match="model 'm' has no ready version"):
        call.pick(_key_in(BUCKETS // 2, BUCKETS))
    call.finish(503)
    assert (v1.leases, p.plane.inflight.count, p.requests("", "", 503)) == (0, 0, 1)


async def test_an_unpinned_call_copies_to_the_shadow_leased_from_routing_until_the_copy_ran(p: Plane) -> None:
    v1, v3 = p.version(1), p.version(3)
    p.publish(v1, shadow=v3)
    call = p.plane.call("test", time.monotonic())
    call.route("m")
    assert v3.leases == 1  # taken with the route: a swap during the primary's run cannot close it
    await call.infer(request({"x": X}))
    call.release()
    await until(lambda: v3.evidence.summary().comparisons.compared == 1)
    assert (v1.leases, v3.leases, v3.evidence.summary().comparisons.agreed) == (0, 0, 1)


async def test_a_copy_the_primarys_queue_would_drop_is_dropped_at_routing_with_no_lease(p: Plane) -> None:
    runtime = SlowRuntime()
    v1, v3 = p.version(1, runtime), p.version(3)
    p.publish(v1, shadow=v3)
    running = asyncio.create_task(v1.infer(request({"x": X})))  # holds the only worker
    await until(lambda: v1.batcher.running == 1)
    waiting = asyncio.create_task(v1.infer(request({"x": X})))  # waits for it
    await until(lambda: v1.batcher.queued == 1)

    call = p.plane.call("test", time.monotonic())
    call.route("m")
    assert (v3.leases, v3.evidence.summary().comparisons.dropped) == (0, 1)  # yields to the primary
    runtime.gate.set()
    await asyncio.gather(running, waiting, call.infer(request({"x": X})))
    call.finish(200)
    assert (p.plane.shadow.pending, v3.evidence.summary().comparisons.compared, v3.leases) == (0, 0, 0)


async def test_a_pinned_call_bypasses_the_split_and_sends_no_copy(p: Plane) -> None:
    v1, v2, v3 = p.version(1), p.version(2), p.version(3)
    p.publish(v1, v2, traffic={"production": 100, "canary": 0}, shadow=v3)
    call = p.plane.call("test", time.monotonic())
    assert call.route("m", 2) is v2
    assert v3.leases == 0
    await call.infer(request({"x": X}))
    call.finish(200)
    assert (p.plane.shadow.pending, v3.evidence.summary().comparisons.compared, v2.leases) == (0, 0, 0)


async def test_a_failed_primary_sends_no_copy_and_returns_the_shadow_lease(p: Plane) -> None:
    v1, v3 = p.version(1, FailingRuntime()), p.version(3)
    p.publish(v1, shadow=v3)
    call = p.plane.call("test", time.monotonic())
    call.route("m")
    with pytest.raises(InferenceFailed, match="injected runtime failure"):
        await call.infer(request({"x": X}))
    call.finish(500)
    assert (p.plane.shadow.pending, v1.leases, v3.leases, p.requests("m", "1", 500)) == (0, 0, 0, 1)


async def test_records_are_joined_with_stored_features_then_assembled_in_column_order(p: Plane) -> None:
    runtime = EchoRuntime()
    v1 = p.version(1, runtime)
    p.publish(v1)
    await p.store.put_many([EntityWrite("k1", {"c": 7.0}, time.time())], VIEW, None)
    call = p.plane.call("test", time.monotonic())
    call.route("m")
    outputs = await call.infer_records([{"cid": "k1", "a": 1, "b": 2}, {"a": 3, "b": 4, "c": 5}], None, "r-1")
    np.testing.assert_array_equal(outputs["y"], [[1, 2, 7], [3, 4, 5]])
    call.finish(200)
    assert runtime.batch_rows == [2]

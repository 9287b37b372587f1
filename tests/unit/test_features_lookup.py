"""Feature lookups: gathered round trips, coalesced misses, the local cache, max age, the breaker."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.contract.manifest import FeatureView, StoredFeature
from server.errors import FeatureStoreUnavailable, FeatureValueInvalid
from server.features.breaker import BreakerState, CircuitBreaker
from server.features.local_cache import ABSENT, LocalCache
from server.features.lookup import FeatureLookup, Missing
from server.features.store import EntityRow, EntityWrite
from server.features.values import decode_stored
from server.metrics.instruments import Metrics
from tests.fakes import ControlledStore

VIEW = FeatureView(
    name="cust",
    entity_key="customer_id",
    features=[StoredFeature(name="age"), StoredFeature(name="count", datatype="INT64")],
)


async def _stored(store: ControlledStore, *entities: str, age_s: float = 0.0, view: FeatureView = VIEW) -> None:
    await store.put_many(
        [EntityWrite(e, {"age": 30.0 + i, "count": i}, time.time() - age_s) for i, e in enumerate(entities)], view, None
    )


def _lookup(store: ControlledStore, **kwargs: float) -> FeatureLookup:
    return FeatureLookup(store, Metrics(), **kwargs)  # type: ignore[arg-type]


async def test_concurrent_requests_share_one_round_trip_and_repeated_keys_are_asked_once() -> None:
    store = ControlledStore()
    await _stored(store, "a", "b", "c")
    lookup = _lookup(store)
    results = await asyncio.gather(
        lookup.rows(VIEW, ["a", "b"]), lookup.rows(VIEW, ["b", "c"]), lookup.rows(VIEW, ["a", "zz"])
    )
    assert len(store.calls) == 1 and sorted(store.calls[0]) == ["a", "b", "c", "zz"]
    assert results[0]["b"] == results[1]["b"] and isinstance(results[0]["b"], EntityRow)
    assert results[2]["zz"] == Missing("no values stored")


async def test_cache_hits_are_answered_while_a_round_trip_is_still_waiting() -> None:
    store = ControlledStore()
    await _stored(store, "hot", "cold")
    lookup = _lookup(store)
    await lookup.rows(VIEW, ["hot"])
    store.gate = asyncio.Event()
    cold = asyncio.ensure_future(lookup.rows(VIEW, ["cold"]))
    hot = await lookup.rows(VIEW, ["hot"])  # answered from the local cache, the gate still shut
    assert isinstance(hot["hot"], EntityRow) and not cold.done()
    store.gate.set()
    assert isinstance((await cold)["cold"], EntityRow)
    assert len(store.calls) == 2


async def test_absent_entities_are_cached_too_and_a_cache_of_size_zero_asks_every_time() -> None:
    store = ControlledStore()
    cached = _lookup(store)
    await cached.rows(VIEW, ["ghost"])
    await cached.rows(VIEW, ["ghost"])
    assert len(store.calls) == 1
    uncached = _lookup(store, cache_size=0)
    await uncached.rows(VIEW, ["ghost"])
    await uncached.rows(VIEW, ["ghost"])
    assert len(store.calls) == 3


async def test_values_older_than_max_age_count_as_missing() -> None:
    view = VIEW.model_copy(update={"max_age_s": 60.0})
    store = ControlledStore()
    await _stored(store, "fresh", view=view)
    await _stored(store, "old", age_s=3600, view=view)
    rows = await _lookup(store).rows(view, ["fresh", "old"])
    assert isinstance(rows["fresh"], EntityRow)
    assert isinstance(rows["old"], Missing) and "older than the view's max_age_s of 60 s" in rows["old"].reason


async def test_a_malformed_stored_value_fails_only_lookups_that_need_its_key() -> None:
    class Malformed(ControlledStore):
        async def get_many(self, entity_keys, view):  # type: ignore[no-untyped-def]
            rows = await super().get_many(entity_keys, view)
            return [
                decode_stored(view.key_prefix + e, b'{"age": "abc", "_event_time": 1}', view) if e == "bad" else r
                for e, r in zip(entity_keys, rows)
            ]

    store = Malformed()
    await _stored(store, "good")
    lookup = _lookup(store)
    bad, good = await asyncio.gather(lookup.rows(VIEW, ["bad"]), lookup.rows(VIEW, ["good"]), return_exceptions=True)
    assert isinstance(bad, FeatureValueInvalid)
    assert bad.message == (
        "stored feature value at key 'hotserve:fv:cust:v1:bad', feature 'age': expected FP32, got 'abc'"
    )
    assert isinstance(good, dict) and isinstance(good["good"], EntityRow)


async def test_failed_round_trips_open_the_breaker_and_then_lookups_fail_without_asking_the_store() -> None:
    store = ControlledStore()
    store.down = True
    lookup = _lookup(store, breaker_failures=2, breaker_reset_s=3600.0)
    for _ in range(2):
        rows = await lookup.rows(VIEW, ["a"])
        assert isinstance(rows["a"], Missing) and rows["a"].unavailable is not None
    assert lookup.breaker.state is BreakerState.OPEN
    rows = await lookup.rows(VIEW, ["b"])
    missing = rows["b"]
    assert isinstance(missing, Missing) and missing.unavailable is not None
    assert "circuit open after 2 failed lookups" in missing.unavailable.message
    assert len(store.calls) == 2  # the third lookup never reached the store


def test_breaker_probes_once_after_reset_and_closes_on_success() -> None:
    now = [0.0]
    states: list[BreakerState] = []
    breaker = CircuitBreaker(failures=2, reset_s=5.0, on_change=states.append, clock=lambda: now[0])
    assert breaker.check("redis") is False
    breaker.failed(False, "refused")
    breaker.failed(False, "refused")
    with pytest.raises(FeatureStoreUnavailable, match=r"last: refused\); next probe in 5.0 s"):
        breaker.check("redis")
    now[0] = 5.0
    assert breaker.check("redis") is True  # the probe
    with pytest.raises(FeatureStoreUnavailable):
        breaker.check("redis")  # others keep failing fast while it is out
    breaker.failed(True, "refused again")
    assert breaker.state is BreakerState.OPEN
    now[0] = 10.0
    assert breaker.check("redis") is True
    breaker.succeeded(True)
    assert breaker.check("redis") is False
    assert states == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_local_cache_expires_entries_and_evicts_the_least_recently_used() -> None:
    now = [0.0]
    cache = LocalCache(size=2, ttl_s=1.0, clock=lambda: now[0])
    row = EntityRow({"age": 1.0}, 0.0)
    cache.put("a", row)
    cache.put("b", None)
    assert cache.get("b", now[0]) is ABSENT and cache.get("a", now[0]) is row
    cache.put("c", row)  # "b" was used least recently
    assert cache.get("b", now[0]) is None and cache.get("a", now[0]) is row
    now[0] = 1.5
    assert cache.get("a", now[0]) is None and len(cache) == 1


async def test_an_entity_of_a_view_the_store_holds_nothing_of_says_how_to_fill_the_store() -> None:
    store = ControlledStore()
    other = VIEW.model_copy(update={"name": "other"})
    await _stored(store, "a", view=other)  # another view's entities do not count
    lookup = _lookup(store)
    for _ in range(2):  # from the store, then from the local cache's remembered absence
        missing = (await lookup.rows(VIEW, ["c42"]))["c42"]
        assert isinstance(missing, Missing)
        assert missing.reason.startswith("no values stored: the feature store holds no entity of this view")
        assert "HOTSERVE_FEATURE_TABLE" in missing.reason and "hotserve features materialize" in missing.reason
    await _stored(store, "b")
    assert (await _lookup(store).rows(VIEW, ["c42"]))["c42"] == Missing("no values stored")


async def test_the_embedded_store_counts_entities_per_view_through_replacement_and_expiry() -> None:
    store = ControlledStore()
    assert store.is_empty(VIEW)
    await _stored(store, "a", "b")
    await _stored(store, "a")  # replaced, not a new entity
    assert not store.is_empty(VIEW) and store.describe() == "embedded store (2 entities)"
    brief = VIEW.model_copy(update={"name": "brief"})
    await store.put_many([EntityWrite("gone", {"age": 1.0}, time.time())], brief, ttl_s=0.0)
    assert not store.is_empty(brief)
    assert await store.get_many(["gone"], brief) == [None]  # expired, dropped when read
    assert store.is_empty(brief) and not store.is_empty(VIEW)

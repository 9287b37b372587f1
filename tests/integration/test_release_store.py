"""`RedisReleaseStore` on the real Redis (the test's database, its own key prefix): the record's
compare-and-set, the driving lease, and the fleet's evidence summed from every replica."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from server.errors import Conflict
from server.evidence.summary import WindowSummary
from server.redis_access import RedisAccess
from server.release.policy import ReleasePolicy
from server.release.record import ReleaseRecord
from server.release.store import RedisReleaseStore

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("HOTSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
HANG_GUARD_S = 20.0


@pytest.fixture
async def store() -> AsyncIterator[RedisReleaseStore]:
    prefix = f"hotserve-test-{uuid.uuid4().hex[:8]}"
    opened = RedisReleaseStore(RedisAccess(REDIS_URL), prefix, timeout_s=2.0)
    yield opened
    await opened.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def record() -> ReleaseRecord:
    return ReleaseRecord(
        id="r1", model="fraud", version=2, baseline=1, policy=ReleasePolicy(), created_by="ci", created_at=0.0
    )


async def test_a_record_is_stored_only_over_the_seq_it_was_read_at(store: RedisReleaseStore) -> None:
    first = await store.put(record(), 0)
    assert first.seq == 1 and await store.get("fraud") == first and await store.models() == ["fraud"]
    second = await store.put(first.model_copy(update={"step": 1}), first.seq)
    with pytest.raises(Conflict, match="changed meanwhile"):
        await store.put(first.model_copy(update={"state": "promoted"}), first.seq)  # a stale driver
    assert await store.get("fraud") == second


async def test_one_replica_holds_the_lease_until_it_stops_renewing(store: RedisReleaseStore) -> None:
    assert await store.hold("fraud", "replica-a", 0.3)
    assert not await store.hold("fraud", "replica-b", 0.3)
    assert await store.hold("fraud", "replica-a", 0.3)  # renewed by its holder
    deadline = time.monotonic() + HANG_GUARD_S
    while not await store.hold("fraud", "replica-b", 0.3):  # replica-a stopped renewing: it lapses
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert not await store.hold("fraud", "replica-a", 0.3)


async def test_the_fleet_evidence_is_every_replicas_buckets_in_the_window(store: RedisReleaseStore) -> None:
    def bucket(slot: int, load: str, requests: int) -> tuple[int, WindowSummary]:
        summary = WindowSummary(
            model="fraud", version=2, since=slot, until=slot + 1, loads=(load,), requests=requests, errors=1
        )
        return slot, summary

    await store.publish("replica-a", [bucket(10, "a1", 5), bucket(11, "a1", 7)], ttl_s=60)
    await store.publish("replica-b", [bucket(11, "b1", 11), bucket(12, "b1", 13)], ttl_s=60)
    await store.publish("replica-a", [bucket(11, "a1", 8)], ttl_s=60)  # a bucket re-published: replaced
    summed = await store.fleet("fraud", 2, 11, 12)
    assert sorted(s.requests for s in summed) == [8, 11, 13]
    assert await store.fleet("fraud", 3, 0, 100) == []

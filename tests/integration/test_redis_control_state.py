"""RedisControlState against a real Redis: compare-and-set, change feed, reconcile, Redis away."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from load_tests.server_process import free_port
from server.errors import ControlConflict, ControlStateUnavailable
from server.registry.control_state import ControlSnapshot
from server.registry.redis_control_state import RedisControlState

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("HOTSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
HANG_GUARD_S = 20


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"hotserve-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    await client.delete(f"{name}:control")
    await client.aclose()


async def test_write_is_compare_and_set_and_every_watcher_sees_the_change(prefix: str) -> None:
    one = RedisControlState(REDIS_URL, key_prefix=prefix, reconcile_interval_s=30)
    two = RedisControlState(REDIS_URL, key_prefix=prefix, reconcile_interval_s=30)
    assert await one.read() == ControlSnapshot()
    changes = two.watch(after_revision=0)
    next_change = asyncio.ensure_future(anext(changes))
    stored = await one.write(ControlSnapshot().with_alias("m", "production", 1), expected_revision=0)
    assert stored.revision == 1
    assert await asyncio.wait_for(next_change, HANG_GUARD_S) == stored
    with pytest.raises(ControlConflict, match="expected revision 0, stored revision is 1"):
        await two.write(ControlSnapshot().with_alias("m", "production", 9), expected_revision=0)
    assert (await two.read()).alias("m", "production") == 1
    await changes.aclose()
    await one.close()
    await two.close()


async def test_a_change_without_a_message_is_caught_by_reconciling(prefix: str) -> None:
    state = RedisControlState(REDIS_URL, key_prefix=prefix, reconcile_interval_s=0.05)
    changes = state.watch(after_revision=0)
    next_change = asyncio.ensure_future(anext(changes))
    snapshot = ControlSnapshot(revision=4).with_alias("m", "canary", 2)
    raw = redis.Redis.from_url(REDIS_URL)  # another writer that publishes nothing
    await raw.hset(f"{prefix}:control", mapping={"doc": snapshot.model_dump_json(), "revision": 4})
    await raw.aclose()
    assert await asyncio.wait_for(next_change, HANG_GUARD_S) == snapshot
    await changes.aclose()
    await state.close()


async def test_unreachable_redis_is_a_fast_clear_error_and_watch_waits_it_out() -> None:
    flips: list[bool] = []
    state = RedisControlState(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2, on_up_change=flips.append)
    with pytest.raises(ControlStateUnavailable, match="cannot be read"):
        await asyncio.wait_for(state.read(), HANG_GUARD_S)
    with pytest.raises(ControlStateUnavailable, match="cannot be written"):
        await asyncio.wait_for(state.write(ControlSnapshot(), 0), HANG_GUARD_S)
    assert flips == [False] and not state.up
    changes = state.watch(after_revision=0)
    with pytest.raises(TimeoutError):  # nothing to yield, no exception: the last routing stays
        await asyncio.wait_for(anext(changes), 0.5)
    await state.close()

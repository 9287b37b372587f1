"""`RedisFeatureStore` against the shared test Redis (`HOTSERVE_TEST_REDIS_URL`, db 15): writes with
expiry, reads of a whole batch in one MGET, malformed values answered per key, errors translated."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from load_tests.server_process import free_port
from server.contract.manifest import FeatureView, StoredFeature
from server.errors import FeatureStoreUnavailable, FeatureValueInvalid
from server.features.redis_store import RedisFeatureStore, redacted
from server.features.store import EntityRow, EntityWrite

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("HOTSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def view() -> AsyncIterator[FeatureView]:
    """A view of its own (unique name), its keys deleted afterwards: the test Redis is shared."""
    own = FeatureView(
        name=f"test-{uuid.uuid4().hex[:12]}",
        entity_key="id",
        features=[StoredFeature(name="x"), StoredFeature(name="n", datatype="INT32")],
    )
    yield own
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(own.key_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_rows_written_with_a_ttl_read_back_in_one_mget(view: FeatureView) -> None:
    store = RedisFeatureStore(REDIS_URL, timeout_s=1.0)
    try:
        now = time.time()
        assert (
            await store.put_many([EntityWrite(f"e{i}", {"x": i / 2, "n": i}, now) for i in range(2500)], view, ttl_s=30)
            == 2500
        )
        client = aioredis.Redis.from_url(REDIS_URL)
        assert 25_000 < await client.pttl(view.key_prefix + "e7") <= 30_000
        await client.set(view.key_prefix + "bad", b'{"x": 1, "n": 2.5, "_event_time": 1}')
        await client.aclose()
        rows = await store.get_many(["e7", "missing", "bad", "e2499"], view)
        assert rows[0] == EntityRow({"x": 3.5, "n": 7}, now) and rows[1] is None
        assert isinstance(rows[2], FeatureValueInvalid) and rows[2].feature == "n"
        assert rows[3] == EntityRow({"x": 1249.5, "n": 2499}, now)
    finally:
        await store.close()


async def test_an_unreachable_redis_is_feature_store_unavailable_without_the_password(view: FeatureView) -> None:
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    store = RedisFeatureStore(url, timeout_s=0.2)
    try:
        with pytest.raises(FeatureStoreUnavailable) as caught:
            await store.get_many(["a"], view)
    finally:
        await store.close()
    assert "sekrit" not in caught.value.message and "redis://:***@127.0.0.1" in caught.value.message
    assert redacted("redis://user:pw@h:1/2") == "redis://user:***@h:1/2"

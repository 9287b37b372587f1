"""`FeastRedisFeatureStore` against a real redis-server holding hashes in Feast's layout (bytes as
Feast 0.67.0 writes them, see tests/unit/test_features_feast_layout.py): several Feast views in one
hash, nulls, absent entities and timestamps, values of the wrong kind, Redis stopped and restarted."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
import redis

from redis_process import RedisProcess, start_redis
from server.contract.manifest import FeastSource, FeatureView, StoredFeature
from server.errors import FeatureStoreUnavailable, FeatureValueInvalid
from server.features.feast_layout import feature_field, redis_key, timestamp_field
from server.features.feast_store import FeastRedisFeatureStore
from server.features.store import EntityRow

pytestmark = pytest.mark.integration

PROJECT = "shop"
TS_2026 = bytes.fromhex("0880f2d6ca061080e59a77")  # Timestamp(seconds=1767225600, nanos=250000000)
TS_EARLIER = bytes.fromhex("0880e2cfaa06")  # Timestamp(seconds=1700000000)
VIEW = FeatureView(
    name="drivers",
    entity_key="driver_id",
    entity_key_type="INT64",
    features=[
        StoredFeature(name="conv_rate", datatype="FP64"),
        StoredFeature(name="trips", datatype="INT64"),
        StoredFeature(name="active", datatype="BOOL"),
        StoredFeature(name="avg_speed", datatype="FP32"),
    ],
    feast=FeastSource(
        project=PROJECT,
        features={
            "conv_rate": "driver_stats:conv_rate",
            "trips": "driver_stats:trips",
            "active": "driver_stats:active",
            "avg_speed": "driver_extra:avg_speed",
        },
    ),
)


def _double(value: float) -> bytes:
    return b"\x29" + struct.pack("<d", value)


def _key(driver_id: int) -> bytes:
    return redis_key(PROJECT, [("driver_id", "INT64", driver_id)])


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    process = start_redis()
    client = redis.Redis(port=process.port)
    client.hset(
        _key(1),
        mapping={
            feature_field("driver_stats", "conv_rate"): _double(0.25),
            feature_field("driver_stats", "trips"): bytes.fromhex("20fdffffffffffffffff01"),  # -3
            feature_field("driver_stats", "active"): bytes.fromhex("3801"),
            timestamp_field("driver_stats"): TS_2026,
            feature_field("driver_extra", "avg_speed"): _double(61.5),
            timestamp_field("driver_extra"): TS_EARLIER,
        },
    )
    client.hset(
        _key(2),
        mapping={
            feature_field("driver_stats", "conv_rate"): b"",  # Feast's null: an empty Value
            feature_field("driver_stats", "trips"): bytes.fromhex("980100"),  # null_val
            feature_field("driver_stats", "active"): bytes.fromhex("3800"),
            timestamp_field("driver_stats"): TS_2026,
            feature_field("driver_extra", "avg_speed"): _double(1.0),  # no _ts:driver_extra: not written
        },
    )
    client.hset(_key(3), mapping={feature_field("driver_stats", "conv_rate"): bytes.fromhex("120178")})
    client.hset(_key(3), timestamp_field("driver_stats"), TS_2026)
    client.set(_key(4), b"not a hash")
    client.close()
    yield process
    process.stop()


@pytest.fixture
async def store(redis_server: RedisProcess) -> FeastRedisFeatureStore:
    return FeastRedisFeatureStore(redis_server.url(), timeout_s=2.0)


async def test_one_round_trip_reads_every_feast_view_of_each_entity(store: FeastRedisFeatureStore) -> None:
    rows = await store.get_many(["1", "2", "404"], VIEW)
    assert rows[0] == EntityRow({"conv_rate": 0.25, "trips": -3, "active": True, "avg_speed": 61.5}, 1700000000.0)
    # nulls are missing, never zero; a view without its timestamp contributes nothing
    assert rows[1] == EntityRow({"active": False}, 1767225600.25)
    assert rows[2] is None
    await store.close()


async def test_values_of_the_wrong_kind_fail_only_their_entity(store: FeastRedisFeatureStore) -> None:
    rows = await store.get_many(["3", "4", "1"], VIEW)
    assert isinstance(rows[0], FeatureValueInvalid)
    assert rows[0].message == (
        "stored feature value at key 'feast:shop:driver_id=3', feature 'conv_rate': Feast string_val is not a number"
    )
    assert isinstance(rows[1], FeatureValueInvalid) and "WRONGTYPE" in rows[1].message
    assert isinstance(rows[2], EntityRow)
    await store.close()


async def test_hotserve_never_writes_feast_hashes(store: FeastRedisFeatureStore) -> None:
    with pytest.raises(FeatureStoreUnavailable, match="materialized by Feast"):
        await store.put_many([], VIEW, None)
    await store.close()


async def test_redis_stopped_is_unavailable_and_a_restart_is_read_again(redis_server: RedisProcess) -> None:
    store = FeastRedisFeatureStore(redis_server.url(), timeout_s=2.0)
    assert isinstance((await store.get_many(["1"], VIEW))[0], EntityRow)
    redis_server.stop()
    with pytest.raises(FeatureStoreUnavailable, match="Feast's redis online store at redis://127.0.0.1"):
        await store.get_many(["1"], VIEW)
    redis_server.start()  # empty: no persistence
    assert await store.get_many(["1"], VIEW) == [None]
    await store.close()

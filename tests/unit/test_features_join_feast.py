"""The join sends a view with a `feast` source to the Feast lookup path, never to the native one;
hotserve never writes a Feast view."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.contract.manifest import FeastSource, FeatureView, StoredFeature
from server.errors import FeatureStoreUnavailable
from server.features.join import FeatureJoin
from server.features.lookup import FeatureLookup
from server.features.materialize import MaterializeError, pick_view
from server.features.memory_store import MemoryFeatureStore
from server.features.store import EntityWrite
from server.metrics.instruments import Metrics

NATIVE = FeatureView(
    name="drivers", entity_key="driver_id", entity_key_type="INT64", features=[StoredFeature(name="a")]
)
FEAST = NATIVE.model_copy(update={"feast": FeastSource(project="shop", features={"a": "driver_stats:a"})})


async def test_feast_views_are_looked_up_on_the_feast_path_and_native_views_on_their_own() -> None:
    native_store, feast_store = MemoryFeatureStore(), MemoryFeatureStore()
    await native_store.put_many([EntityWrite("7", {"a": 1.0}, time.time())], NATIVE, None)
    await feast_store.put_many([EntityWrite("7", {"a": 2.0}, time.time())], FEAST, None)
    metrics = Metrics()
    join = FeatureJoin(FeatureLookup(native_store, metrics), FeatureLookup(feast_store, metrics))
    assert (await join.join([{"driver_id": 7}], NATIVE))[0] == [{"driver_id": 7, "a": 1.0}]
    assert (await join.join([{"driver_id": 7}], FEAST))[0] == [{"driver_id": 7, "a": 2.0}]
    await join.close()


async def test_a_feast_view_without_a_redis_to_read_is_unavailable_naming_the_setting() -> None:
    join = FeatureJoin(FeatureLookup(MemoryFeatureStore(), Metrics()))
    with pytest.raises(FeatureStoreUnavailable, match="project 'shop'.*set HOTSERVE_FEAST_REDIS_URL"):
        await join.join([{"driver_id": 7}], FEAST)
    await join.close()


def test_hotserve_materialize_refuses_a_feast_view(tmp_path: Path) -> None:
    with pytest.raises(MaterializeError, match="reads Feast project 'shop': materialize it with `feast materialize`"):
        pick_view({FEAST.label: FEAST}, None, tmp_path)
    assert pick_view({NATIVE.label: NATIVE}, None, tmp_path) is NATIVE

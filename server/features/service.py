"""Feature-store wiring for `create_app`: which store, the lookup path over it, the start-up fill.

`HOTSERVE_REDIS_URL` set: `RedisFeatureStore`. Unset: `MemoryFeatureStore`, filled at start-up
from `HOTSERVE_FEATURE_TABLE` for every feature view in the model repository (later by
`hotserve features materialize --server`). Views with a `feast` source go to a second lookup path
over `FeastRedisFeatureStore` (`HOTSERVE_FEAST_REDIS_URL`, else `HOTSERVE_REDIS_URL`): its own
local cache and breaker, since Feast's Redis may be another server. Views are read from the repository's `model.json`
files, so the admin endpoint can accept rows for a view before a model using it is routed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import ValidationError

from server.contract.manifest import FeatureView, ModelManifest
from server.features.feast_store import FeastRedisFeatureStore
from server.features.join import FeatureJoin
from server.features.lookup import FeatureLookup
from server.features.memory_store import MemoryFeatureStore
from server.features.redis_store import RedisFeatureStore
from server.features.store import FeatureStore
from server.features.table import TableError, check_columns, read_table, table_rows
from server.metrics.instruments import Metrics
from server.redis_access import feast_redis_access_for, redis_access_for
from server.registry.repository import scan_repository, version_dir
from server.settings import Settings

logger = logging.getLogger(__name__)


def repository_views(root: Path) -> dict[str, FeatureView]:
    """Every feature view a `model.json` in the repository declares, by `label`; unreadable
    manifests are skipped (the registry reports them)."""
    views: dict[str, FeatureView] = {}
    if not root.is_dir():
        return views
    for name, versions in scan_repository(root).items():
        for version in versions:
            try:
                manifest = ModelManifest.read(version_dir(root, name, version))
            except (OSError, ValidationError):
                continue
            if manifest.features is not None and manifest.features.view is not None:
                views.setdefault(manifest.features.view.label, manifest.features.view)
    return views


def open_store(settings: Settings) -> FeatureStore:
    access = redis_access_for(settings)
    if access is None:
        return MemoryFeatureStore()
    return RedisFeatureStore(access, settings.redis_timeout_ms / 1000.0)


def open_feast_store(settings: Settings) -> FeastRedisFeatureStore | None:
    """Feast's Redis online store (`HOTSERVE_FEAST_REDIS_URL`, else `HOTSERVE_REDIS_URL`), if any."""
    access = feast_redis_access_for(settings)
    if access is None:
        return None
    return FeastRedisFeatureStore(access, settings.redis_timeout_ms / 1000.0)


def open_lookup(store: FeatureStore, settings: Settings, metrics: Metrics) -> FeatureLookup:
    """The lookup path (local cache, gathering, breaker) over `store`, as the settings say."""
    return FeatureLookup(
        store,
        metrics,
        cache_size=settings.feature_cache_size,
        cache_ttl_s=settings.feature_cache_ttl_s,
        gather_window_s=settings.feature_gather_window_ms / 1000.0,
        breaker_failures=settings.feature_breaker_failures,
        breaker_reset_s=settings.feature_breaker_reset_s,
    )


async def open_features(settings: Settings, metrics: Metrics) -> FeatureJoin:
    """The app's feature join over the configured stores, the embedded one filled from its table."""
    store = open_store(settings)
    lookup = open_lookup(store, settings, metrics)
    if isinstance(store, MemoryFeatureStore):
        # Feast views are read from Feast's Redis, never from the embedded store.
        views = {
            label: view for label, view in repository_views(settings.model_repository).items() if view.feast is None
        }
        if settings.feature_table:
            await fill_from_table(store, settings.feature_table, views)
        empty = sorted(label for label, view in views.items() if store.is_empty(view))
        if empty:
            logger.warning(
                "features: the embedded store holds no entities of view(s) %s: v1 requests that need "
                "stored features will be 404 until it is filled (HOTSERVE_FEATURE_TABLE=TABLE at "
                "start-up, or `hotserve features materialize TABLE --server URL`)",
                ", ".join(empty),
            )
    logger.info("features: %s", store.describe())
    feast_store = open_feast_store(settings)
    feast = None
    if feast_store is not None:
        feast = open_lookup(feast_store, settings, metrics)
        logger.info("features of Feast views: %s", feast_store.describe())
    return FeatureJoin(lookup, feast)


async def fill_from_table(store: MemoryFeatureStore, source: str, views: dict[str, FeatureView]) -> None:
    """Load `source` into `store` for every view whose columns it has (others are logged)."""
    for label, view in views.items():
        if view.feast is not None:
            continue  # Feast materializes it into Feast's Redis online store
        try:
            columns, rows = await asyncio.to_thread(read_table, source)
            check_columns(view, columns, None, source)
        except TableError as exc:
            logger.warning("feature table not loaded for view %s: %s", label, exc)
            continue
        checked = await asyncio.to_thread(table_rows, view, rows)
        written = await store.put_many(checked.writes, view, None)
        logger.info(
            "feature view %s: %d entities loaded from %s (%d rows read, %d rejected)",
            label,
            written,
            source,
            checked.read,
            len(checked.rejected),
        )
        for number, reason in checked.rejected[:5]:
            logger.warning("feature table %s row %d rejected: %s", source, number, reason)

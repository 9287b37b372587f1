"""The `FeatureStore` protocol: what the lookup path (`features/lookup.py`) asks of a backend.

`RedisFeatureStore` (`redis_store.py`), `MemoryFeatureStore` (`memory_store.py`, the embedded
default) and `FeastRedisFeatureStore` (`feast_store.py`, what Feast materialized, read-only)
implement it; each translates its own failures into `FeatureStoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from server.contract.manifest import FeatureView
from server.errors import FeatureValueInvalid

FeatureValue = float | int | bool


@dataclass(frozen=True, slots=True)
class EntityRow:
    """One entity's stored features (only those stored; absent ones are missing) and the
    wall-clock time (Unix seconds) they were computed at."""

    values: Mapping[str, FeatureValue]
    event_time: float


StoredRow = EntityRow | FeatureValueInvalid | None
"""What a store answers per key: the row, the reason it does not parse, or None (no such entity).
A malformed value fails only the requests that need that key, so it is an answer, not a raise."""


@dataclass(frozen=True, slots=True)
class EntityWrite:
    """One validated entity row to store (materialize, admin endpoint)."""

    entity: str
    values: Mapping[str, FeatureValue]
    event_time: float


class FeatureStore(Protocol):
    """An online store of entity features, keyed by view version and entity."""

    backend: str
    """`redis`, `memory` or `feast`: the `layer` label of its hit/miss metrics."""

    async def get_many(self, entity_keys: Sequence[str], view: FeatureView) -> list[StoredRow]:
        """Rows for `entity_keys`, in order, in one round trip. Raises FeatureStoreUnavailable."""
        ...

    async def put_many(self, rows: Sequence[EntityWrite], view: FeatureView, ttl_s: float | None) -> int:
        """Store `rows` (replacing what each entity had), expiring after `ttl_s`; returns rows written."""
        ...

    async def close(self) -> None: ...

    def is_empty(self, view: FeatureView) -> bool:
        """True only when the store knows it holds no entity of `view` at all (a cheap count; a
        store that cannot tell cheaply answers False). Lets a 404 say how to fill the store."""
        ...

    def describe(self) -> str:
        """Where the store is, for logs and errors (no credentials)."""
        ...

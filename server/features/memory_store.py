"""`MemoryFeatureStore`: the embedded default store (no `HOTSERVE_REDIS_URL`), inside the server.

Filled at start-up from `HOTSERVE_FEATURE_TABLE` or through `/admin/features/...` by
`hotserve features materialize --server`. Keys and expiry behave as in Redis; values are
checked when written, so reads never meet a malformed one. Per process: replicas do not share it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from server.contract.manifest import FeatureView
from server.features.store import EntityRow, EntityWrite, StoredRow


class MemoryFeatureStore:
    """Entity rows in a dict, with per-key expiry on the monotonic clock."""

    backend = "memory"

    def __init__(self) -> None:
        self._rows: dict[str, tuple[EntityRow, float | None]] = {}
        self._per_view: Counter[str] = Counter()
        """Entities held per view key prefix (expired ones leave when a read meets them)."""

    async def get_many(self, entity_keys: Sequence[str], view: FeatureView) -> list[StoredRow]:
        now = time.monotonic()
        prefix = view.key_prefix
        found: list[StoredRow] = []
        for entity in entity_keys:
            entry = self._rows.get(prefix + entity)
            if entry is not None and entry[1] is not None and entry[1] <= now:
                del self._rows[prefix + entity]
                self._per_view[prefix] -= 1
                entry = None
            found.append(None if entry is None else entry[0])
        return found

    async def put_many(self, rows: Sequence[EntityWrite], view: FeatureView, ttl_s: float | None) -> int:
        expires = None if ttl_s is None else time.monotonic() + ttl_s
        prefix = view.key_prefix
        for row in rows:
            key = prefix + row.entity
            if key not in self._rows:
                self._per_view[prefix] += 1
            self._rows[key] = (EntityRow(row.values, row.event_time), expires)
        return len(rows)

    def is_empty(self, view: FeatureView) -> bool:
        return self._per_view[view.key_prefix] <= 0

    async def close(self) -> None:
        self._rows.clear()
        self._per_view.clear()

    def describe(self) -> str:
        return f"embedded store ({len(self._rows)} entities)"

"""`LocalCache`: the small in-process TTL cache in front of the feature store (the `local` layer).

Holds decoded rows, and absences too, so a hot entity costs a dict lookup rather than a
round trip. Bounded (least recently used entries go first) and short-lived (`ttl_s`): what
a cached entry may lag behind the store. Concurrent misses of one key are coalesced by the
gatherer (`gather.py`), not here. Plain data structure: no I/O, no asyncio.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from server.features.store import EntityRow

ABSENT = object()
"""Cached answer "the store has no such entity"; distinct from a cache miss (None)."""


class LocalCache:
    """Up to `size` entries, each for `ttl_s` seconds; size 0 or ttl 0 keeps nothing."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[EntityRow | object, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl_s > 0

    def get(self, key: str, now: float) -> EntityRow | object | None:
        """The cached row, `ABSENT`, or None on a miss (never cached, expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, row: EntityRow | None) -> None:
        if not self.enabled:
            return
        self._entries[key] = (ABSENT if row is None else row, self._clock() + self.ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget `key` (its stored value was just rewritten)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

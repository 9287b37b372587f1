"""`PairStore`: joined (prediction, label) pairs per model, version and time window (control path).

Label intake writes a pair for every label joined to its served row; live quality and the
release's label gate read them back. Windows are `window_s` wide, aligned on the epoch and
taken by SERVED time, so a window's figure is the quality of what was answered in it, filled in
as its labels arrive. Each pair is stored under its (request id, row): a label sent twice is
one pair (the later label wins), so quality counts it once.

- `RedisPairStore` (with `HOTSERVE_REDIS_URL`): one hash per model, version and window,
  `<prefix>:quality:<model>:<version>:<window>`, field `<request id>\\x1f<row>`; every replica
  reads the same pairs, so every replica reports the same fleet figure.
- `SqlitePairStore` (embedded): a table in the served index's SQLite file (survives restarts).

Both are bounded: a window holds at most `max_pairs` pairs (later ones are dropped and counted),
and windows older than the label horizon (plus the span reported) expire.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
import redis

from server.errors import LabelStoreUnavailable
from server.labels.sqlite_file import SqliteFile

FIELD_SEPARATOR = "\x1f"


@dataclass(frozen=True, slots=True)
class Pair:
    """A served row's score(s) and its label (and the shadow's score, when a copy ran)."""

    request_id: str
    row: int
    version: int
    ts: float
    """When the row was answered (epoch seconds)."""
    label: float
    """Binary: 0/1; multiclass: the class index; regression: the value."""
    score: list[float]
    shadow_version: int | None = None
    shadow_score: list[float] | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            [self.request_id, self.row, self.ts, self.label, self.score, self.shadow_version, self.shadow_score]
        )

    @classmethod
    def decode(cls, version: int, raw: bytes) -> Pair:
        rid, row, ts, label, score, shadow_version, shadow_score = orjson.loads(raw)
        return cls(rid, row, version, ts, label, score, shadow_version, shadow_score)


@dataclass(frozen=True, slots=True)
class AddResult:
    new: int = 0
    """Pairs stored for the first time."""
    replaced: int = 0
    """Pairs already stored (a duplicate label: counted once, the later label kept)."""
    dropped: int = 0
    """Pairs not stored because their window was full."""


class PairStore(Protocol):
    """Blocking: call from a worker thread."""

    window_s: float

    def add(self, model: str, pairs: Sequence[Pair]) -> AddResult:
        """Raises LabelStoreUnavailable (nothing of the batch may have been stored; adding it
        again is safe)."""
        ...

    def load(self, model: str, version: int, since: float, until: float) -> list[Pair]:
        """Pairs of rows answered in the windows covering [since, until). Raises LabelStoreUnavailable."""
        ...

    def close(self) -> None: ...


def window_of(ts: float, window_s: float) -> int:
    return math.floor(ts / window_s)


def windows_between(since: float, until: float, window_s: float) -> range:
    """The windows covering [since, until)."""
    return range(window_of(since, window_s), math.ceil(until / window_s))


class RedisPairStore:
    def __init__(self, client: redis.Redis, prefix: str, window_s: float, keep_s: float, max_pairs: int) -> None:
        self._client = client
        self._prefix = f"{prefix}:quality:"
        self.window_s = window_s
        self._keep_ms = max(1, int(keep_s * 1000))
        self._max_pairs = max_pairs

    def _key(self, model: str, version: int, window: int) -> str:
        return f"{self._prefix}{model}:{version}:{window}"

    def add(self, model: str, pairs: Sequence[Pair]) -> AddResult:
        if not pairs:
            return AddResult()
        keys = [self._key(model, p.version, window_of(p.ts, self.window_s)) for p in pairs]
        touched = list(dict.fromkeys(keys))
        try:
            sizes = self._client.pipeline(transaction=False)
            for key in touched:
                sizes.hlen(key)
            room = {key: self._max_pairs - int(n) for key, n in zip(touched, sizes.execute(), strict=True)}
            fields: dict[str, dict[str, bytes]] = {key: {} for key in touched}
            for key, pair in zip(keys, pairs, strict=True):
                field = f"{pair.request_id}{FIELD_SEPARATOR}{pair.row}"
                if field not in fields[key] and room[key] <= 0:
                    continue
                if field not in fields[key]:
                    room[key] -= 1
                fields[key][field] = pair.encode()
            kept = sum(len(mapping) for mapping in fields.values())
            with self._client.pipeline(transaction=False) as pipe:
                written = [key for key in touched if fields[key]]
                for key in written:  # one HSET per window: it answers how many fields were new
                    pipe.hset(key, mapping=fields[key])  # type: ignore[arg-type]
                for key in touched:
                    pipe.pexpire(key, self._keep_ms)
                results = pipe.execute()
        except redis.RedisError as error:
            raise LabelStoreUnavailable(f"labelled pairs cannot be stored in Redis: {type(error).__name__}") from None
        new = sum(int(r) for r in results[: len(written)])
        return AddResult(new=new, replaced=kept - new, dropped=len(pairs) - kept)

    def load(self, model: str, version: int, since: float, until: float) -> list[Pair]:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for window in windows_between(since, until, self.window_s):
                    pipe.hvals(self._key(model, version, window))
                found = pipe.execute()
        except redis.RedisError as error:
            raise LabelStoreUnavailable(f"labelled pairs cannot be read from Redis: {type(error).__name__}") from None
        return [Pair.decode(version, raw) for values in found for raw in values]

    def close(self) -> None:
        self._client.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    version INTEGER NOT NULL,
    window INTEGER NOT NULL,
    pair BLOB NOT NULL,
    PRIMARY KEY (model, request_id, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pairs_window ON pairs (model, version, window);
"""


class SqlitePairStore:
    def __init__(
        self,
        path: Path,
        window_s: float,
        keep_s: float,
        max_pairs: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.window_s = window_s
        self._keep_s = keep_s
        self._max_pairs = max_pairs
        self._clock = clock
        self._lock = threading.Lock()
        self._file = SqliteFile(path, _SCHEMA)

    def add(self, model: str, pairs: Sequence[Pair]) -> AddResult:
        if not pairs:
            return AddResult()
        new = replaced = dropped = 0
        try:
            with self._lock:
                self._file.db.execute("BEGIN IMMEDIATE")
                existing = self._existing(model, [(p.request_id, p.row) for p in pairs])
                counts: dict[tuple[int, int], int] = {}
                rows = []
                for pair in pairs:
                    window = window_of(pair.ts, self.window_s)
                    slot = (pair.version, window)
                    if slot not in counts:
                        counts[slot] = self._file.db.execute(
                            "SELECT COUNT(*) FROM pairs WHERE model = ? AND version = ? AND window = ?",
                            (model, pair.version, window),
                        ).fetchone()[0]
                    if (pair.request_id, pair.row) in existing:
                        replaced += 1
                    elif counts[slot] >= self._max_pairs:
                        dropped += 1
                        continue
                    else:
                        new += 1
                        counts[slot] += 1
                        existing.add((pair.request_id, pair.row))
                    rows.append((model, pair.request_id, pair.row, pair.version, window, pair.encode()))
                self._file.db.executemany("INSERT OR REPLACE INTO pairs VALUES (?, ?, ?, ?, ?, ?)", rows)
                oldest = window_of(self._clock() - self._keep_s, self.window_s)
                self._file.db.execute("DELETE FROM pairs WHERE model = ? AND window < ?", (model, oldest))
                self._file.db.execute("COMMIT")
        except sqlite3.Error as error:
            with self._lock:
                self._file.rollback()
            raise LabelStoreUnavailable(f"labelled pairs cannot be stored in {self.path}: {error}") from None
        return AddResult(new=new, replaced=replaced, dropped=dropped)

    def _existing(self, model: str, keys: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        """The keys already stored (point lookups on the primary key: a row-value IN scans)."""
        query = "SELECT 1 FROM pairs WHERE model = ? AND request_id = ? AND row = ?"
        return {(rid, row) for rid, row in keys if self._file.db.execute(query, (model, rid, row)).fetchone()}

    def load(self, model: str, version: int, since: float, until: float) -> list[Pair]:
        span = windows_between(since, until, self.window_s)
        try:
            with self._lock:
                rows = self._file.db.execute(
                    "SELECT pair FROM pairs WHERE model = ? AND version = ? AND window >= ? AND window < ?",
                    (model, version, span.start, span.stop),
                ).fetchall()
        except sqlite3.Error as error:
            raise LabelStoreUnavailable(f"labelled pairs cannot be read from {self.path}: {error}") from None
        return [Pair.decode(version, raw) for (raw,) in rows]

    def close(self) -> None:
        with self._lock:
            self._file.close()

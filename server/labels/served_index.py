"""`ServedIndex`: what was answered to each (request id, row), kept for the label horizon so a label
arriving later (minutes to days, at any replica) can be joined to the prediction it judges.

Fed off the event loop: capture's writer thread calls `put_many` with every captured record
(`server/capture/`). Read by label intake (`server/labels/intake.py`) in a worker thread.
Two stores behind one protocol, chosen from settings at the composition root:

- `RedisServedIndex` (with `HOTSERVE_REDIS_URL`): one key per model, request id and row,
  `<prefix>:served:<model>:<request id>:<row>`, expiring after `label_horizon_s`, written in one
  pipelined round trip per batch. Fleet-wide: the replica that takes a label need not be the one
  that answered.
- `SqliteServedIndex` (embedded): a SQLite file (WAL) in the capture directory, so requests
  answered before a restart still join; rows older than the horizon are deleted as it goes.

An entry keeps what quality needs, never the inputs: the version that answered, when, its
numeric outputs, and the shadow's version and outputs when a copy ran.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
import redis

from server.capture.record import CaptureRecord, CaptureValue
from server.errors import LabelStoreUnavailable
from server.labels.sqlite_file import SqliteFile

log = logging.getLogger(__name__)

StoredOutputs = dict[str, float | str | list[float]]


@dataclass(frozen=True, slots=True)
class ServedEntry:
    """One answered row, as a label is joined to it."""

    version: int
    ts: float
    """When answered, epoch seconds (UTC)."""
    outputs: StoredOutputs
    shadow_version: int | None = None
    shadow_outputs: StoredOutputs | None = None

    def encode(self) -> bytes:
        return orjson.dumps([self.version, self.ts, self.outputs, self.shadow_version, self.shadow_outputs])

    @classmethod
    def decode(cls, raw: bytes | str) -> ServedEntry:
        version, ts, outputs, shadow_version, shadow_outputs = orjson.loads(raw)
        return cls(int(version), float(ts), outputs, shadow_version, shadow_outputs)

    @classmethod
    def of(cls, record: CaptureRecord) -> ServedEntry:
        shadow = None if record.shadow_outputs is None else numeric(record.shadow_outputs)
        return cls(record.version, record.ts.timestamp(), numeric(record.outputs), record.shadow_version, shadow)


def numeric(outputs: dict[str, CaptureValue]) -> StoredOutputs:
    """The outputs quality may read: every one but lists of text (a multiclass model that outputs
    only its class keeps that class as text)."""
    return {
        name: value  # type: ignore[misc]
        for name, value in outputs.items()
        if not (isinstance(value, list) and value and isinstance(value[0], str))
    }


Key = tuple[str, int]
"""(request id, row)."""


class ServedIndex(Protocol):
    """Served rows by (model, request id, row). Blocking: call from a worker thread, never the loop."""

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        """Keep every record for the label horizon. Never raises: a failure is counted and logged
        (capture's writer must go on)."""
        ...

    def get_many(self, model: str, keys: Sequence[Key]) -> list[ServedEntry | None]:
        """The entry of each key (None: unknown or expired). Raises LabelStoreUnavailable."""
        ...

    def close(self) -> None: ...


class RedisServedIndex:
    """The fleet's served index in Redis: one expiring key per row, pipelined."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        horizon_s: float,
        on_error: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}:served:"
        self._ttl_ms = max(1, int(horizon_s * 1000))
        self._on_error = on_error

    def _key(self, model: str, request_id: str, row: int) -> str:
        return f"{self._prefix}{model}:{request_id}:{row}"

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        if not records:
            return
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for r in records:
                    pipe.set(self._key(r.model, r.request_id, r.row), ServedEntry.of(r).encode(), px=self._ttl_ms)
                pipe.execute()
        except redis.RedisError as error:
            _failed(self._on_error, len(records), error)

    def get_many(self, model: str, keys: Sequence[Key]) -> list[ServedEntry | None]:
        if not keys:
            return []
        try:
            raw = self._client.mget([self._key(model, rid, row) for rid, row in keys])
        except redis.RedisError as error:
            raise LabelStoreUnavailable(f"the served index (Redis) cannot be read: {type(error).__name__}") from None
        return [None if value is None else ServedEntry.decode(value) for value in raw]

    def close(self) -> None:
        self._client.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS served (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    ts REAL NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (model, request_id, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS served_ts ON served (ts);
"""


class SqliteServedIndex:
    """The embedded served index: a SQLite file that outlives the process, bounded by the horizon."""

    EXPIRE_EVERY_S = 60.0

    def __init__(
        self,
        path: Path,
        horizon_s: float,
        on_error: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._horizon_s = horizon_s
        self._on_error = on_error
        self._clock = clock
        self._lock = threading.Lock()
        self._file = SqliteFile(path, _SCHEMA)
        self._expired_at = 0.0

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        if not records:
            return
        rows = [(r.model, r.request_id, r.row, r.ts.timestamp(), ServedEntry.of(r).encode()) for r in records]
        try:
            with self._lock:
                self._file.db.execute("BEGIN IMMEDIATE")
                self._file.db.executemany("INSERT OR REPLACE INTO served VALUES (?, ?, ?, ?, ?)", rows)
                self._file.db.execute("COMMIT")
                self._expire()
        except sqlite3.Error as error:
            with self._lock:
                self._file.rollback()
            _failed(self._on_error, len(records), error)

    def _expire(self) -> None:
        now = self._clock()
        if now - self._expired_at >= self.EXPIRE_EVERY_S:
            self._file.db.execute("DELETE FROM served WHERE ts < ?", (now - self._horizon_s,))
            self._expired_at = now

    def get_many(self, model: str, keys: Sequence[Key]) -> list[ServedEntry | None]:
        if not keys:
            return []
        oldest = self._clock() - self._horizon_s
        found: list[ServedEntry | None] = []
        try:
            with self._lock:
                for rid, row in keys:  # point lookups on the primary key (a row-value IN scans)
                    hit = self._file.db.execute(
                        "SELECT ts, entry FROM served WHERE model = ? AND request_id = ? AND row = ?", (model, rid, row)
                    ).fetchone()
                    found.append(None if hit is None or hit[0] < oldest else ServedEntry.decode(hit[1]))
        except sqlite3.Error as error:
            raise LabelStoreUnavailable(f"the served index ({self.path}) cannot be read: {error}") from None
        return found

    def close(self) -> None:
        with self._lock:
            self._file.close()


class ObservedIndex:
    """An index that also hands every batch to observers (the label-free quality estimate)."""

    def __init__(self, index: ServedIndex, observers: Iterable[Callable[[Sequence[CaptureRecord]], None]]) -> None:
        self.index = index
        self._observers = list(observers)

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        self.index.put_many(records)
        for observe in self._observers:
            try:
                observe(records)
            except Exception:  # an observer's bug must not stop capture's writer
                log.exception("a served-row observer failed")

    def get_many(self, model: str, keys: Sequence[Key]) -> list[ServedEntry | None]:
        return self.index.get_many(model, keys)

    def close(self) -> None:
        self.index.close()


def _failed(on_error: Callable[[int], None] | None, rows: int, error: Exception) -> None:
    log.warning("served index: %d rows not kept: %s", rows, type(error).__name__)
    if on_error is not None:
        on_error(rows)

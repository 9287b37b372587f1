"""`ServedIndex`: what was answered to each (request id, row), kept for the label horizon so a label
arriving later (minutes to days, at any replica) can be joined to the prediction it judges.

Fed off the event loop: capture's writer thread calls `put_rows` with each batch of captured rows,
column by column (`ServedRows`, `server/capture/`); every row's entry is encoded in one pass over
the columns and the batch written in one statement (SQLite) or one pipeline (Redis). Read by label intake (`server/labels/intake.py`) in a worker thread.
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

from server.capture.record import CaptureRecord, ServedRows
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


Entry = list[object]
"""An entry as `ServedEntry.encode` serializes it: [version, ts, outputs, shadow version, shadow outputs]."""


def entries(rows: ServedRows) -> list[Entry]:
    """Every row's entry (the numeric and text outputs: a list-of-text output is not kept), one
    pass over the columns."""
    version = rows.version
    names = [name for name in rows.outputs if name not in rows.text_lists]
    columns = [rows.outputs[name] for name in names]
    if rows.shadow_versions is None:
        if len(names) == 1:
            name = names[0]
            return [[version, ts, {name: value}, None, None] for ts, value in zip(rows.ts, columns[0])]
        return [[version, ts, dict(zip(names, values)), None, None] for ts, *values in zip(rows.ts, *columns)]
    shadow = rows.shadow_outputs or {}
    shadow_names = [name for name in shadow if name not in rows.text_lists]
    shadow_columns = [shadow[name] for name in shadow_names]
    result: list[Entry] = []
    for i, (ts, shadow_version) in enumerate(zip(rows.ts, rows.shadow_versions)):
        answered = (
            None
            if shadow_version is None
            else {name: column[i] for name, column in zip(shadow_names, shadow_columns) if column[i] is not None}
        )
        outputs = {name: column[i] for name, column in zip(names, columns)}
        result.append([version, ts, outputs, shadow_version, answered])
    return result


def encode_entries(rows: ServedRows) -> list[bytes]:
    """Every row's entry as `ServedEntry.encode` writes it."""
    dumps = orjson.dumps
    return [dumps(entry) for entry in entries(rows)]


Key = tuple[str, int]
"""(request id, row)."""


class ServedIndex(Protocol):
    """Served rows by (model, request id, row). Blocking: call from a worker thread, never the loop."""

    def put_rows(self, rows: ServedRows) -> None:
        """Keep every row for the label horizon. Never raises: a failure is counted and logged
        (capture's writer must go on)."""
        ...

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        """`put_rows` of records (grouped by version)."""
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

    def put_rows(self, rows: ServedRows) -> None:
        if not rows:
            return
        prefix = f"{self._prefix}{rows.model}:"
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for request_id, row, entry in zip(rows.request_ids, rows.rows, encode_entries(rows)):
                    pipe.set(f"{prefix}{request_id}:{row}", entry, px=self._ttl_ms)
                pipe.execute()
        except redis.RedisError as error:
            _failed(self._on_error, len(rows), error)

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        for rows in ServedRows.of_records(records):
            self.put_rows(rows)

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
_INSERT_ROWS = (
    "INSERT OR REPLACE INTO served (model, request_id, row, ts, entry) SELECT ?, json_extract(value, '$[0]'),"
    " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)"
)
"""A batch in one statement: its rows as one JSON array of [request id, row, ts, entry], which
SQLite takes apart (the entry stored as its JSON text), so the batch costs one call and one
release of the GIL, not a binding and a step per row."""


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

    def put_rows(self, rows: ServedRows) -> None:
        if not rows:
            return
        document = orjson.dumps(list(zip(rows.request_ids, rows.rows, rows.ts, entries(rows))))
        try:
            with self._lock:
                self._file.db.execute("BEGIN IMMEDIATE")
                self._file.db.execute(_INSERT_ROWS, (rows.model, document))
                self._file.db.execute("COMMIT")
                self._expire()
        except sqlite3.Error as error:
            with self._lock:
                self._file.rollback()
            _failed(self._on_error, len(rows), error)

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        for rows in ServedRows.of_records(records):
            self.put_rows(rows)

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

    def __init__(self, index: ServedIndex, observers: Iterable[Callable[[ServedRows], None]]) -> None:
        self.index = index
        self._observers = list(observers)

    def put_rows(self, rows: ServedRows) -> None:
        self.index.put_rows(rows)
        for observe in self._observers:
            try:
                observe(rows)
            except Exception:  # an observer's bug must not stop capture's writer
                log.exception("a served-row observer failed")

    def put_many(self, records: Sequence[CaptureRecord]) -> None:
        for rows in ServedRows.of_records(records):
            self.put_rows(rows)

    def get_many(self, model: str, keys: Sequence[Key]) -> list[ServedEntry | None]:
        return self.index.get_many(model, keys)

    def close(self) -> None:
        self.index.close()


def _failed(on_error: Callable[[int], None] | None, rows: int, error: Exception) -> None:
    log.warning("served index: %d rows not kept: %s", rows, type(error).__name__)
    if on_error is not None:
        on_error(rows)

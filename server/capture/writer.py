"""`CaptureWriter`: the thread that turns captured requests (and label rows) into Parquet files on a sink.

Off the event loop: the loop only appends references to a deque (`submit`, `append_table`); a
daemon thread wakes every `POLL_S`, takes everything queued, converts each version's requests
to one Arrow table (`layout.py`), hands its rows to the served index when one is attached
(`index.put_rows`, the table's columns: no object per row), and stages the table in its partition,
`<model>/version=<v>/hour=<YYYY-MM-DDTHH>/`. A partition's staged rows become one file when they
reach `rotate_bytes` (Arrow bytes, before compression) or their oldest is `rotate_age_s` old;
the file is written whole (`sink.put`: temp name and rename, or one upload). A request whose
shadow copy is still running waits for its answer at most `shadow_wait_s`, then is written
without it.

Memory is bounded: everything accepted and not yet written (queued, staged, or a file the sink
refused, retried with backoff up to `retry_max_s`) counts against `max_records` rows and
`max_bytes` (the tensors' bytes plus a fixed overhead per request); beyond either bound new
records are dropped at the tap and counted (`hotserve_capture_dropped_records_total`,
`reason="buffer_full"`), never the request slowed or failed. While the sink fails, its errors
are counted and `hotserve_capture_sink_up` is 0; once it answers again the held files are
written, and capture goes on. `close()` (the server's shutdown) writes everything accepted; a
crash loses at most what was not yet written: up to `rotate_age_s` (+ `shadow_wait_s` for a
request still waiting for its shadow, + `POLL_S`) of capture.

Public API for other datasets (labels): `append_table(partition, table, model=..., dataset=...)`
appends the rows of an Arrow `table` to the partition directory `partition` (relative to the
sink's root, e.g. `<model>/labels/hour=<YYYY-MM-DDTHH>`), under the same bound, rotation,
atomic files and shutdown flush as capture; tables of one partition should share a schema (a
table with another schema starts a new file). It returns False when the rows were dropped
(bound reached, or the writer closed). Callable from any thread; it never blocks on the sink.
`request_flush()` asks the thread to write every staged partition at its next wake-up.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from server.capture.captured import SHADOW_PENDING, Captured
from server.capture.layout import VersionLayout
from server.capture.record import HOUR_FORMAT, ServedRows
from server.capture.sink import Sink
from server.metrics.instruments import Metrics

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often the thread takes what was queued (an idle wake-up costs microseconds)."""
CAPTURE = "capture"
"""The `dataset` label of captured requests (label files name theirs)."""
RETRY_FIRST_S = 0.5
COMPRESSION = "zstd"

_SHADOW_STATE = attrgetter("shadow_state")
_MANIFEST = attrgetter("manifest")
_TS = attrgetter("ts")
_ROWS = attrgetter("rows")
_NBYTES = attrgetter("nbytes")


class RecordIndex(Protocol):
    """What the writer hands every batch of captured rows to (the served index, `server/labels/`)."""

    def put_rows(self, rows: ServedRows) -> None: ...


class TableAppend(NamedTuple):
    """Rows of another dataset for one partition (`append_table`)."""

    partition: str
    table: pa.Table
    model: str
    dataset: str
    nbytes: int


@dataclass(slots=True)
class _Staged:
    """Rows of one partition waiting to become a file."""

    model: str
    dataset: str
    partition: str
    schema: pa.Schema
    opened: float
    tables: list[pa.Table] = field(default_factory=list)
    arrow_bytes: int = 0
    records: int = 0
    held_bytes: int = 0
    """What the buffer bound counted for these rows."""


@dataclass(slots=True)
class _File:
    """A finished file the sink has not taken yet."""

    model: str
    dataset: str
    path: str
    data: pa.Buffer
    records: int
    held_bytes: int
    attempts: int = 0
    next_attempt: float = 0.0


class CaptureWriter:
    """Writes queued captures and tables to a sink from its own thread (see module docstring)."""

    def __init__(
        self,
        sink: Sink,
        metrics: Metrics,
        *,
        replica: str,
        rotate_bytes: int = 16 * 1024 * 1024,
        rotate_age_s: float = 60.0,
        shadow_wait_s: float = 2.0,
        retry_max_s: float = 30.0,
        max_records: int = 200_000,
        max_bytes: int = 64 * 1024 * 1024,
        index: RecordIndex | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self._metrics = metrics
        self._replica = re.sub(r"[^A-Za-z0-9_.-]", "_", replica) or "replica"
        self._rotate_bytes = rotate_bytes
        self.rotate_age_s = rotate_age_s
        self.shadow_wait_s = shadow_wait_s
        self._retry_max_s = retry_max_s
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.index = index
        """Receives every captured row (`put_rows`) when set; attach before `start`."""
        self._clock = clock
        self._queue: deque[Captured | TableAppend] = deque()
        # Accounting of what is held, each counter written by one thread only (no lock on the loop):
        self.accepted_records = 0
        """Rows accepted by `submit` (the event loop's)."""
        self.accepted_bytes = 0
        self._table_lock = threading.Lock()
        self._table_records = 0
        self._table_bytes = 0
        self._released_records = 0
        """Rows written or dropped after they were accepted (the writer thread's)."""
        self._released_bytes = 0
        self._waiting: list[Captured] = []
        self._staged: dict[tuple[str, str], _Staged] = {}
        self._failed: list[_File] = []
        self._layouts: dict[tuple[str, int], VersionLayout] = {}
        self._flush = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._close_deadline = 0.0
        self.lost_at_close = 0
        """Rows the sink had not taken when `close` gave up (counted dropped, reason `shutdown`)."""
        self._thread = threading.Thread(target=self._run, name="hotserve-capture-writer", daemon=True)
        self._sequence = itertools.count()
        metrics.capture_buffered_records.set_function(lambda: self.held_records)
        metrics.capture_buffered_bytes.set_function(lambda: self.held_bytes)
        metrics.capture_sink_up.labels(sink.kind).set(1)
        metrics.capture_sink_errors.labels(sink.kind)  # from the start: a first refusal shows as an increase

    # --- any thread ---------------------------------------------------------------------------

    @property
    def held_records(self) -> int:
        """Rows accepted and not yet written or dropped."""
        return self.accepted_records + self._table_records - self._released_records

    @property
    def held_bytes(self) -> int:
        return self.accepted_bytes + self._table_bytes - self._released_bytes

    def has_room(self) -> bool:
        return self.held_records < self.max_records and self.held_bytes < self.max_bytes

    def submit(self, item: Captured) -> None:
        """Queue a captured request (event loop only; the tap checked `has_room` first)."""
        self.accepted_records += item.rows
        self.accepted_bytes += item.nbytes
        self._queue.append(item)

    def append_table(self, partition: str, table: pa.Table, *, model: str, dataset: str) -> bool:
        """Queue `table`'s rows for `partition` (see module docstring); False: dropped and counted."""
        rows, nbytes = table.num_rows, table.nbytes
        with self._table_lock:
            if self._closed or not self.has_room():
                self._metrics.capture_dropped.labels(model, dataset, "closed" if self._closed else "buffer_full").inc(
                    rows
                )
                return False
            self._table_records += rows
            self._table_bytes += nbytes
            self._queue.append(TableAppend(partition, table, model, dataset, nbytes))
        return True

    def request_flush(self) -> None:
        """Write every staged partition at the thread's next wake-up (not waiting for rotation)."""
        self._flush.set()

    def start(self) -> None:
        self._thread.start()
        log.info(
            "capture writing to %s (files every %.0f s or %d MiB per partition)",
            self.sink.describe(),
            self.rotate_age_s,
            self._rotate_bytes // (1024 * 1024),
        )

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop taking rows, write everything accepted, stop the thread (blocking: run it off the
        loop). True when everything was written; what the sink did not take by `timeout_s` is
        counted dropped (`reason="shutdown"`)."""
        with self._table_lock:
            self._closed = True
        self._close_deadline = self._clock() + timeout_s
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s + 1.0)
        else:  # never started: write what was queued on this thread
            self._final()
        return self.lost_at_close == 0 and self.held_records == 0

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._cycle(final=False)
            except Exception:  # the thread must outlive any one bad batch
                log.exception("capture writer cycle failed")
        self._final()

    def _final(self) -> None:
        try:
            self._cycle(final=True)
        except Exception:
            log.exception("capture writer's final flush failed")
        while self._failed and self._clock() < self._close_deadline:
            wait = min(f.next_attempt for f in self._failed) - self._clock()
            if wait > 0:
                time.sleep(min(wait, max(0.0, self._close_deadline - self._clock())))
            self._retry(final=True)
        self._drop_everything("shutdown")
        log.info(
            "capture writer stopped: %d rows accepted, %d rows held unwritten",
            self.accepted_records + self._table_records,
            self.held_records,
        )

    def _cycle(self, final: bool) -> None:
        now = self._clock()
        taken = self._waiting
        self._waiting = []
        queue = self._queue
        while True:
            try:
                entry = queue.popleft()
            except IndexError:
                break
            if type(entry) is TableAppend:
                self._stage_table(entry, now)
            else:
                taken.append(entry)  # type: ignore[arg-type]
        if taken:
            for items in self._ready(taken, time.time(), final):
                self._stage_captures(items, now)
        flush = final or self._flush.is_set()
        self._flush.clear()
        for key, staged in list(self._staged.items()):
            if flush or staged.arrow_bytes >= self._rotate_bytes or now - staged.opened >= self.rotate_age_s:
                del self._staged[key]
                self._finish(staged)
        self._retry(final)

    def _ready(self, taken: list[Captured], wall: float, final: bool) -> list[list[Captured]]:
        """The requests ready to convert, by version; those whose shadow copy is still running
        (within the wait) are kept for a later cycle. Whole-list checks first: the common batch
        (no copy pending, one version) costs no Python step per request."""
        if SHADOW_PENDING in set(map(_SHADOW_STATE, taken)) and not final:
            ready: list[Captured] = []
            for item in taken:
                if item.shadow_state == SHADOW_PENDING and wall - item.ts < self.shadow_wait_s:
                    self._waiting.append(item)
                else:
                    ready.append(item)
            taken = ready
        if len(set(map(id, map(_MANIFEST, taken)))) <= 1:
            return [taken] if taken else []
        by_version: dict[tuple[str, int], list[Captured]] = {}
        for item in taken:
            by_version.setdefault((item.manifest.name, item.manifest.version), []).append(item)
        return list(by_version.values())

    def _stage_captures(self, items: list[Captured], now: float) -> None:
        manifest = items[0].manifest
        key = (manifest.name, manifest.version)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = VersionLayout.of(manifest)
        hours = np.fromiter(map(_TS, items), np.float64, len(items)) // 3600
        groups: list[tuple[int, list[Captured]]]
        if hours.min() == hours.max():
            groups = [(int(hours[0]), items)]
        else:
            by_hour: dict[int, list[Captured]] = {}
            for hour, item in zip(hours.astype(np.int64).tolist(), items):
                by_hour.setdefault(hour, []).append(item)
            groups = list(by_hour.items())
        for hour, group in groups:
            rows = sum(map(_ROWS, group))
            nbytes = sum(map(_NBYTES, group))
            try:
                table = layout.table(group)
            except (ValueError, pa.ArrowException) as error:
                log.warning("capture of %s version %d: %d rows not convertible: %s", *key, rows, error)
                self._release(manifest.name, CAPTURE, rows, nbytes, "unconvertible")
                continue
            stamp = datetime.fromtimestamp(hour * 3600, UTC).strftime(HOUR_FORMAT)
            partition = f"{manifest.name}/version={manifest.version}/hour={stamp}"
            self._stage(manifest.name, CAPTURE, partition, table, rows, nbytes, now)
            if self.index is not None:
                try:
                    self.index.put_rows(ServedRows.of_table(table, manifest.name, manifest.version))
                except Exception:  # put_rows counts its own failures; this is a defect's last guard
                    self._metrics.served_index_errors.inc(rows)
                    log.exception("served index refused %d records of %s version %d", rows, *key)

    def _stage_table(self, entry: TableAppend, now: float) -> None:
        self._stage(entry.model, entry.dataset, entry.partition, entry.table, entry.table.num_rows, entry.nbytes, now)

    def _stage(
        self, model: str, dataset: str, partition: str, table: pa.Table, rows: int, nbytes: int, now: float
    ) -> None:
        key = (dataset, partition)
        staged = self._staged.get(key)
        if staged is not None and not staged.schema.equals(table.schema):
            del self._staged[key]
            self._finish(staged)  # another schema: a file of its own
            staged = None
        if staged is None:
            staged = self._staged[key] = _Staged(model, dataset, partition, table.schema, now)
        staged.tables.append(table)
        staged.arrow_bytes += table.nbytes
        staged.records += rows
        staged.held_bytes += nbytes

    def _finish(self, staged: _Staged) -> None:
        """Make a staged partition one Parquet file and hand it to the sink."""
        try:
            table = pa.concat_tables(staged.tables)
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, compression=COMPRESSION)
            data = buffer.getvalue()
        except (ValueError, pa.ArrowException) as error:
            log.error("capture file for %s not written: %s", staged.partition, error)
            self._release(staged.model, staged.dataset, staged.records, staged.held_bytes, "unconvertible")
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{self._replica}-{next(self._sequence):06d}-{uuid.uuid4().hex[:8]}.parquet"
        self._put(
            _File(staged.model, staged.dataset, f"{staged.partition}/{name}", data, staged.records, staged.held_bytes)
        )

    def _put(self, file: _File) -> None:
        file.attempts += 1
        started = self._clock()
        try:
            self.sink.put(file.path, file.data)
        except Exception as error:  # SinkError, or any failure of a sink: the file is kept and retried
            self._metrics.capture_sink_errors.labels(self.sink.kind).inc()
            self._metrics.capture_sink_up.labels(self.sink.kind).set(0)
            file.next_attempt = self._clock() + min(self._retry_max_s, RETRY_FIRST_S * 2 ** (file.attempts - 1))
            self._failed.append(file)
            log.warning("capture sink refused %s (attempt %d): %s", file.path, file.attempts, error)
            return
        self._metrics.capture_sink_up.labels(self.sink.kind).set(1)
        self._metrics.capture_put_duration.labels(self.sink.kind).observe(self._clock() - started)
        self._metrics.capture_files.labels(file.model, file.dataset).inc()
        self._metrics.capture_written_bytes.labels(file.model, file.dataset).inc(file.data.size)
        self._metrics.capture_written.labels(file.model, file.dataset).inc(file.records)
        self._released_records += file.records
        self._released_bytes += file.held_bytes

    def _retry(self, final: bool) -> None:
        """Files the sink refused before, whose backoff ran out (oldest first)."""
        if not self._failed:
            return
        now = self._clock()
        due = [f for f in self._failed if final or f.next_attempt <= now]
        if not due:
            return
        self._failed = [f for f in self._failed if f not in due]
        for position, file in enumerate(due):
            self._put(file)
            if self._failed and self._failed[-1] is file:  # still down: the rest waits its turn
                for rest in due[position + 1 :]:
                    rest.next_attempt = file.next_attempt
                    self._failed.append(rest)
                return

    def _release(self, model: str, dataset: str, rows: int, nbytes: int, reason: str) -> None:
        self._metrics.capture_dropped.labels(model, dataset, reason).inc(rows)
        self._released_records += rows
        self._released_bytes += nbytes

    def _drop_everything(self, reason: str) -> None:
        """At the end of a shutdown: what could not be written is counted dropped."""
        self.lost_at_close = self.held_records
        for file in self._failed:
            self._release(file.model, file.dataset, file.records, file.held_bytes, reason)
        self._failed = []
        for staged in self._staged.values():
            self._release(staged.model, staged.dataset, staged.records, staged.held_bytes, reason)
        self._staged = {}
        if self.lost_at_close:
            log.error("capture: %d accepted rows were never written (%s)", self.lost_at_close, reason)

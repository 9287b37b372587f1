"""Entity rows from a table (CSV, Parquet or the `demo:fraud` generator), checked against a view.

What `hotserve features materialize` and the embedded store's start-up fill read. Each row
is checked on its own (`values.check_write`): a bad row is rejected with its row number and
reason, the others are kept. Several rows of one entity keep the latest event time (the
last of equals). Rows without an event-time column are stamped with the time they were read.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demos import ENTITY_TABLES, fraud, is_demo
from server.contract.manifest import FeatureView
from server.contract.tables import table_format
from server.features.store import EntityWrite
from server.features.values import RowRejected, check_write


class TableError(ValueError):
    """A table that cannot be read at all (missing file, unknown format, missing column)."""


@dataclass
class TableRows:
    """The rows to write and the ones refused (1-based data row number, reason)."""

    writes: list[EntityWrite] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    read: int = 0


def read_table(
    source: str, demo_rows: int | None = None, demo_seed: int = 0
) -> tuple[list[str], Iterator[Mapping[str, Any]]]:
    """(column names, rows as mappings) of a `.csv`/`.parquet` file or a demo generator."""
    if is_demo(source):
        if source not in ENTITY_TABLES:
            raise TableError(f"{source}: unknown demo table; known: {', '.join(ENTITY_TABLES)}")
        columns, records = fraud.records(rows=demo_rows or fraud.DEFAULT_ROWS, seed=demo_seed)
        return columns, iter(records)
    path = Path(source)
    try:
        kind = table_format(path)
    except ValueError as exc:
        raise TableError(f"{source}: {exc}") from None
    if kind == ".csv":
        handle = path.open(newline="")
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        return columns, _closing(reader, handle)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TableError(f"{source}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    table = pq.read_table(path)
    return list(table.column_names), iter(table.to_pylist())


def _closing(rows: Iterable[Mapping[str, Any]], handle: Any) -> Iterator[Mapping[str, Any]]:
    with handle:
        yield from rows


def check_columns(view: FeatureView, columns: list[str], event_time_column: str | None, source: str) -> None:
    """TableError unless the table has the view's entity key and every feature."""
    wanted = [view.entity_key, *(f.name for f in view.features)]
    if event_time_column:
        wanted.append(event_time_column)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise TableError(
            f"{source}: columns {missing} of feature view {view.label} missing (columns present: {columns})"
        )


def table_rows(
    view: FeatureView, rows: Iterable[Mapping[str, Any]], event_time_column: str | None = None, now: float | None = None
) -> TableRows:
    """Check every row against `view`; keep the latest row per entity."""
    stamp = time.time() if now is None else now
    out = TableRows()
    latest: dict[str, EntityWrite] = {}
    for number, row in enumerate(rows, start=1):
        out.read = number
        event_time = row.get(event_time_column) if event_time_column else stamp
        try:
            write = check_write(view, row.get(view.entity_key), row, event_time, text_ok=True)
        except RowRejected as exc:
            out.rejected.append((number, str(exc)))
            continue
        kept = latest.get(write.entity)
        if kept is None or write.event_time >= kept.event_time:
            latest[write.entity] = write
    out.writes = list(latest.values())
    return out

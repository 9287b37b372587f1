"""Label bodies -> rows (control path): JSON (an array, or JSON lines), CSV or Parquet, by
Content-Type. Each label: `request_id` (text), `row` (integer >= 0, default 0), `label` (a number,
or a class name for a multiclass model that has text classes), optional `ts` (the label's time:
ISO 8601 or epoch seconds; default: when it was taken).

A malformed body (not JSON, a missing column, a request id that is not text) is refused whole
(400 naming the first problem); whether each label suits the model's task is the intake's check.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from server.errors import InvalidInput

JSON_TYPES = ("application/json",)
JSON_LINES_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/json-lines")
CSV_TYPES = ("text/csv", "application/csv")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/parquet", "application/x-parquet")
CONTENT_TYPES = (*JSON_TYPES, *JSON_LINES_TYPES, *CSV_TYPES, *PARQUET_TYPES)


@dataclass(slots=True)
class LabelRows:
    """Parsed labels, column-wise, in body order."""

    request_ids: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    """As sent: numbers (int or float), or text (a class name)."""
    ts: list[float | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.request_ids)


def parse_labels(body: bytes, content_type: str) -> LabelRows:
    """Raises InvalidInput (400) for a body that cannot be read as labels."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in PARQUET_TYPES:
        return _from_parquet(body)
    if kind in CSV_TYPES:
        return _from_csv(body)
    if kind in JSON_TYPES or kind in JSON_LINES_TYPES:
        return _from_json(body)
    raise InvalidInput("Content-Type", expected=" or ".join(CONTENT_TYPES), got=kind or "none")


def _from_json(body: bytes) -> LabelRows:
    stripped = body.lstrip()
    try:
        if stripped.startswith(b"["):
            items = orjson.loads(stripped)
        else:
            items = [orjson.loads(line) for line in stripped.splitlines() if line.strip()]
    except orjson.JSONDecodeError as error:
        raise InvalidInput("body", detail=f"not JSON (an array of labels or one label per line): {error}") from None
    out = LabelRows()
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInput(f"labels[{number}]", expected="an object", got=type(item).__name__)
        _append(out, number, item.get("request_id"), item.get("row", 0), item.get("label"), item.get("ts"))
    return out


def _from_csv(body: bytes) -> LabelRows:
    try:
        reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig")))
        fields = reader.fieldnames or []
        for needed in ("request_id", "label"):
            if needed not in fields:
                raise InvalidInput("CSV header", detail=f"needs a {needed!r} column; has {fields}")
        out = LabelRows()
        for number, item in enumerate(reader):
            row = item.get("row") or 0
            ts = item.get("ts") or None
            _append(out, number, item["request_id"], _csv_number(row), _csv_value(item["label"]), ts)
    except UnicodeDecodeError:
        raise InvalidInput("body", detail="CSV must be UTF-8") from None
    except csv.Error as error:
        raise InvalidInput("body", detail=f"not CSV: {error}") from None
    return out


def _csv_number(text: object) -> object:
    if isinstance(text, str):
        try:
            return int(text)
        except ValueError:
            return text
    return text


def _csv_value(text: str) -> object:
    """A CSV label: an integer, else a float, else the text (a class name)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _from_parquet(body: bytes) -> LabelRows:
    try:
        table = pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, OSError) as error:
        raise InvalidInput("body", detail=f"not Parquet: {error}") from None
    names = table.column_names
    for needed in ("request_id", "label"):
        if needed not in names:
            raise InvalidInput("Parquet columns", detail=f"needs a {needed!r} column; has {names}")
    ids = table.column("request_id").to_pylist()
    labels = table.column("label").to_pylist()
    rows = table.column("row").to_pylist() if "row" in names else [0] * len(ids)
    ts_column = table.column("ts") if "ts" in names else None
    stamps: list[object] = [None] * len(ids) if ts_column is None else ts_column.to_pylist()
    out = LabelRows()
    for number, (rid, row, label, ts) in enumerate(zip(ids, rows, labels, stamps, strict=True)):
        _append(out, number, rid, 0 if row is None else row, label, ts)
    return out


def _append(out: LabelRows, number: int, rid: object, row: object, label: object, ts: object) -> None:
    if not isinstance(rid, str) or not rid:
        raise InvalidInput(f"labels[{number}].request_id", expected="non-empty text", got=repr(rid))
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        raise InvalidInput(f"labels[{number}].row", expected="an integer >= 0", got=repr(row))
    if label is None:
        raise InvalidInput(f"labels[{number}].label", detail=f"missing (request_id {rid!r})")
    out.request_ids.append(rid)
    out.rows.append(row)
    out.labels.append(label)
    out.ts.append(_timestamp(number, ts))


def _timestamp(number: int, ts: object) -> float | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        return _utc(ts).timestamp()
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
        return float(ts)
    if isinstance(ts, str):
        try:
            return _utc(datetime.fromisoformat(ts.replace("Z", "+00:00"))).timestamp()
        except ValueError:
            pass
    raise InvalidInput(f"labels[{number}].ts", expected="ISO 8601 or epoch seconds", got=repr(ts))


def _utc(ts: datetime) -> datetime:
    """A time without a zone is UTC (the server's clock is never the sender's zone)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts

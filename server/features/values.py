"""Feature values against their view's declared types: parsing, the stored JSON form, row checks.

One place decides what a valid value is, for every way values arrive: a stored Redis value
(`redis_store.py`, strict JSON numbers), a materialized table row or an admin-endpoint row
(`table.py`, `api/features_admin.py`; table cells may be text). Stored form of one entity: a
JSON object of feature values plus `_event_time` (Unix seconds), readable with `redis-cli GET`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from server.contract.manifest import NUMPY_DTYPES, FeatureView
from server.errors import FeatureValueInvalid
from server.features.store import EntityRow, EntityWrite, FeatureValue

EVENT_TIME_FIELD = "_event_time"


class RowRejected(ValueError):
    """A row that cannot be stored; the message is the reason (names the column)."""


def _limits(datatype: str) -> tuple[float, float]:
    dtype = NUMPY_DTYPES[datatype]
    info: np.iinfo[Any] | np.finfo[Any] = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    return float(info.min), float(info.max)


_LIMITS = {name: _limits(name) for name in NUMPY_DTYPES if name not in ("BOOL", "BYTES")}


def value_limits(datatype: str) -> tuple[float, float]:
    """Smallest and largest value of a numeric `datatype`."""
    return _LIMITS[datatype]


def parse_value(datatype: str, value: object, text_ok: bool = False) -> FeatureValue:
    """`value` as a Python number of `datatype`; ValueError saying why not.

    JSON numbers always; with `text_ok` (table cells) also their text and 0/1 or
    true/false for BOOL. Floats must be finite and in range; integers whole and in range.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if text_ok and isinstance(value, str):
        text = value.strip()
        if datatype == "BOOL" and text.lower() in ("true", "false", "0", "1"):
            return text.lower() in ("true", "1")
        try:
            value = (
                int(text) if datatype not in ("FP16", "FP32", "FP64") and text.lstrip("+-").isdigit() else float(text)
            )
        except ValueError:
            raise ValueError(f"expected {datatype}, got {value!r}") from None
    if datatype == "BOOL":
        if isinstance(value, bool):
            return value
        if text_ok and value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise ValueError(f"expected BOOL, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected {datatype}, got {value!r}")
    low, high = _LIMITS[datatype]
    if datatype.startswith("FP"):
        number = float(value)
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(f"expected a finite {datatype}, got {value!r}")
        return number
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected {datatype}, got {value!r}")
        value = int(value)
    if not low <= value <= high:
        raise ValueError(f"expected {datatype}, got {value!r} (out of range)")
    return value


def parse_entity(view: FeatureView, value: object) -> str:
    """The entity key as the store names it; ValueError unless it has the view's key type."""
    if isinstance(value, np.generic):
        value = value.item()
    if view.entity_key_type == "INT64":
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError(f"expected a 64-bit integer, got {value!r}")
        return str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def parse_event_time(value: object) -> float:
    """Unix seconds from a number, an ISO-8601 text or a datetime (naive means UTC)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"expected Unix seconds or an ISO-8601 time, got {text!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return (value - datetime(1970, 1, 1)).total_seconds()
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected Unix seconds or an ISO-8601 time, got {value!r}")
    return float(value)


def check_write(
    view: FeatureView, entity: object, values: Mapping[str, object], event_time: object, text_ok: bool = False
) -> EntityWrite:
    """A row to store, every feature of the view present and of its type; RowRejected naming
    the column at fault. Extra columns are ignored (tables hold more than one view)."""
    try:
        key = parse_entity(view, entity)
    except ValueError as exc:
        raise RowRejected(f"{view.entity_key}: {exc}") from None
    parsed: dict[str, FeatureValue] = {}
    for feature in view.features:
        raw = values.get(feature.name)
        if raw is None or (text_ok and raw == "") or (isinstance(raw, float) and math.isnan(raw)):
            raise RowRejected(f"{feature.name}: missing")
        try:
            parsed[feature.name] = parse_value(feature.datatype, raw, text_ok)
        except ValueError as exc:
            raise RowRejected(f"{feature.name}: {exc}") from None
    try:
        when = parse_event_time(event_time)
    except ValueError as exc:
        raise RowRejected(f"event time: {exc}") from None
    return EntityWrite(key, parsed, when)


def encode_stored(row: EntityWrite) -> bytes:
    """The stored JSON form of one entity."""
    return orjson.dumps({**row.values, EVENT_TIME_FIELD: row.event_time})


def decode_stored(key: str, raw: bytes, view: FeatureView) -> EntityRow | FeatureValueInvalid:
    """A stored value back to a row, or the error naming the key (and feature) that does not parse.

    Features absent from the object are left out (missing: default or error at the join).
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return FeatureValueInvalid(key, None, f"not a JSON object: {raw[:60]!r}")
    if not isinstance(doc, dict):
        return FeatureValueInvalid(key, None, f"not a JSON object: {raw[:60]!r}")
    try:
        event_time = parse_event_time(doc.get(EVENT_TIME_FIELD))
    except ValueError as exc:
        return FeatureValueInvalid(key, EVENT_TIME_FIELD, str(exc))
    values: dict[str, FeatureValue] = {}
    for feature in view.features:
        raw_value = doc.get(feature.name)
        if raw_value is None:
            continue
        try:
            values[feature.name] = parse_value(feature.datatype, raw_value)
        except ValueError as exc:
            return FeatureValueInvalid(key, feature.name, str(exc))
    return EntityRow(values, event_time)

"""One version's capture columns, and a batch of `Captured` requests as an Arrow table (writer thread).

`VersionLayout.of(manifest)` fixes the columns from the version's signature (so every file of a
version has one schema, whatever its requests carried): the feature input of a version with a
feature spec becomes one `in.<feature>` float64 column per feature name; any other tensor one
column, float64 when a row of it is one number (its shape after the batch axis is fixed and holds
one value), string for text (BYTES), else a list of them. Outputs likewise as `out.<name>`, and
the shadow's answers as `shadow.<name>` with the primary's output columns (an output the shadow
lacks, or answers in another width, is null). Conversion works on whole tensors: the requests'
tensors are concatenated once per batch, never visited row by row (text aside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter

import numpy as np
import pyarrow as pa

from server.capture.captured import SHADOW_ENDED, Captured
from server.capture.record import (
    BASE_SCHEMA,
    INPUT_PREFIX,
    OUTPUT_PREFIX,
    SHADOW_PREFIX,
    SHADOW_VERSION,
)
from server.contract.manifest import ModelManifest, TensorSpec


@dataclass(frozen=True, slots=True)
class Column:
    """One captured column: which tensor it reads, and how."""

    name: str
    """The Parquet column name (`in.age`, `out.probability`)."""
    tensor: str
    index: int | None
    """The feature's position in the tensor's row (a feature column); None: the whole row."""
    text: bool
    scalar: bool

    @property
    def type(self) -> pa.DataType:
        value = pa.string() if self.text else pa.float64()
        return value if self.scalar else pa.list_(value)


@dataclass(frozen=True, slots=True)
class VersionLayout:
    """The columns of one version's capture files."""

    model: str
    version: int
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]
    schema: pa.Schema

    @classmethod
    def of(cls, manifest: ModelManifest) -> VersionLayout:
        batch_axis = manifest.batching.batch_axis
        features = manifest.features
        inputs: list[Column] = []
        for spec in manifest.inputs:
            if features is not None and spec.name == features.input:
                inputs.extend(
                    Column(INPUT_PREFIX + name, spec.name, index, text=False, scalar=True)
                    for index, name in enumerate(features.columns)
                )
            else:
                inputs.append(_column(INPUT_PREFIX, spec, batch_axis))
        outputs = [_column(OUTPUT_PREFIX, spec, batch_axis) for spec in manifest.outputs]
        shadow = [Column(SHADOW_PREFIX + c.tensor, c.tensor, None, text=c.text, scalar=c.scalar) for c in outputs]
        fields = [
            *BASE_SCHEMA,
            *(pa.field(c.name, c.type) for c in (*inputs, *outputs)),
            SHADOW_VERSION,
            *(pa.field(c.name, c.type) for c in shadow),
        ]
        return cls(manifest.name, manifest.version, tuple(inputs), tuple(outputs), pa.schema(fields))

    def table(self, items: Sequence[Captured]) -> pa.Table:
        """The rows of `items` (all of this version) in this layout's schema; raises ValueError
        when a request's tensors do not fit it.

        Each tensor is gathered once for all the requests (one concatenate), and every column is
        a slice of it; a batch whose tensors cannot be concatenated (another trailing shape per
        request) takes the per-request path. The common cases cost a few Python operations per
        request: one-row requests need no repeat, and a batch without shadow answers gets null
        shadow columns at once.
        """
        count = len(items)
        rows = np.fromiter(map(_ROWS, items), np.int64, count)
        total = int(rows.sum())
        single = total == count  # every request one row
        owner = None if single else pa.array(np.repeat(np.arange(count), rows))
        ids = pa.array(list(map(_REQUEST_ID, items)), pa.string())
        protocols = pa.array(list(map(_PROTOCOL, items)), pa.string())
        ts_us = np.rint(np.fromiter(map(_TS, items), np.float64, count) * 1e6).astype(np.int64)
        if single:
            row_numbers = np.zeros(total, np.int32)
        else:
            starts = np.concatenate(([0], np.cumsum(rows)[:-1]))
            row_numbers = (np.arange(total) - np.repeat(starts, rows)).astype(np.int32)
            ts_us = np.repeat(ts_us, rows)
        arrays: list[pa.Array] = [
            ids if owner is None else ids.take(owner),
            pa.array(row_numbers),
            pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            pa.repeat(pa.scalar(self.model, pa.string()), total),
            pa.repeat(pa.scalar(self.version, pa.int32()), total),
            protocols if owner is None else protocols.take(owner),
        ]
        for columns, of in ((self.inputs, _INPUTS), (self.outputs, _OUTPUTS)):
            gathered: dict[str, tuple[list[np.ndarray | None], np.ndarray | None]] = {}
            for column in columns:
                found = gathered.get(column.tensor)
                if found is None:
                    tensors: list[np.ndarray | None] = list(map(dict.get, map(of, items), repeat(column.tensor)))
                    found = gathered[column.tensor] = (tensors, _gather(tensors, total))
                tensors, matrix = found
                arrays.append(_array(column, tensors, rows) if matrix is None else _from_matrix(column, matrix, total))
        answered = (
            [item.shadow_outputs if item.shadow_state == SHADOW_ENDED else None for item in items]
            if SHADOW_ENDED in set(map(_SHADOW_STATE, items))
            else None
        )
        if answered is None or all(a is None for a in answered):
            arrays.append(pa.nulls(total, pa.int32()))
            arrays.extend(pa.nulls(total, column.type) for column in self.outputs)
            return pa.Table.from_arrays(arrays, schema=self.schema)
        shadow_versions = np.array(
            [item.shadow_version if outputs is not None else 0 for item, outputs in zip(items, answered)],
            dtype=np.int32,
        )
        arrays.append(
            pa.array(np.repeat(shadow_versions, rows), pa.int32(), mask=np.repeat([a is None for a in answered], rows))
        )
        for column in self.outputs:
            shadow = Column(SHADOW_PREFIX + column.tensor, column.tensor, None, column.text, column.scalar)
            arrays.append(_array(shadow, [None if a is None else a.get(column.tensor) for a in answered], rows))
        return pa.Table.from_arrays(arrays, schema=self.schema)


_ROWS = attrgetter("rows")
_REQUEST_ID = attrgetter("request_id")
_PROTOCOL = attrgetter("protocol")
_TS = attrgetter("ts")
_SHADOW_STATE = attrgetter("shadow_state")
_INPUTS = attrgetter("inputs")
_OUTPUTS = attrgetter("outputs")


def _column(prefix: str, spec: TensorSpec, batch_axis: bool) -> Column:
    per_row = spec.shape[1:] if batch_axis else spec.shape
    scalar = all(d > 0 for d in per_row) and math.prod(per_row) == 1
    return Column(prefix + spec.name, spec.name, None, text=spec.datatype == "BYTES", scalar=scalar)


def _gather(tensors: list[np.ndarray | None], total: int) -> np.ndarray | None:
    """Every request's tensor as one [total rows, values per row] matrix; None when a request
    lacks it or the requests' trailing shapes differ (the per-request path then)."""
    if not tensors:
        return None
    try:  # a missing tensor (None) or a 0-d one cannot be concatenated: the per-request path
        joined: np.ndarray = np.concatenate(tensors)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None
    if joined.shape[0] != total:
        return None
    return joined.reshape(total, -1)


def _from_matrix(column: Column, matrix: np.ndarray, total: int) -> pa.Array:
    if column.index is not None:
        if column.index >= matrix.shape[1]:
            raise ValueError(f"{column.name}: {column.tensor} has {matrix.shape[1]} values per row")
        matrix = matrix[:, column.index : column.index + 1]
    width = matrix.shape[1]
    if column.scalar and width != 1:
        raise ValueError(f"{column.name}: {width} values per row where one was expected")
    if column.text:
        return _text_array(column, [matrix], np.array([total]))
    if column.scalar:
        return pa.array(matrix[:, 0].astype(np.float64, copy=False), pa.float64())
    offsets = pa.array(np.arange(0, (total + 1) * width, width, dtype=np.int32)[: total + 1])
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel().astype(np.float64, copy=False), pa.float64()))


def _array(column: Column, tensors: list[np.ndarray | None], rows: np.ndarray) -> pa.Array:
    """One column over every item's rows; an item without the tensor (a shadow that did not
    answer, or answered without it or in another width) gives nulls."""
    parts: list[np.ndarray | None] = []
    for tensor, count in zip(tensors, rows.tolist()):
        if tensor is None:
            parts.append(None)
            continue
        matrix = tensor.reshape(count, -1) if count else tensor.reshape(0, 0)
        if column.index is not None:
            if column.index >= matrix.shape[1]:
                raise ValueError(f"{column.name}: {column.tensor} has {matrix.shape[1]} values per row")
            matrix = matrix[:, column.index : column.index + 1]
        if column.scalar and matrix.shape[1] != 1:
            if column.name.startswith(SHADOW_PREFIX):
                parts.append(None)
                continue
            raise ValueError(f"{column.name}: {matrix.shape[1]} values per row where one was expected")
        parts.append(matrix)
    if column.text:
        return _text_array(column, parts, rows)
    missing = np.repeat([part is None for part in parts], rows)
    if column.scalar:
        values = [
            np.full(count, np.nan) if part is None else part[:, 0].astype(np.float64, copy=False)
            for part, count in zip(parts, rows.tolist())
        ]
        flat = np.concatenate(values) if values else np.empty(0)
        return pa.array(flat, pa.float64(), mask=missing if missing.any() else None)
    widths = np.repeat([0 if p is None else p.shape[1] for p in parts], rows)
    offsets = np.concatenate(([0], np.cumsum(widths))).astype(np.int32)
    present = [p.astype(np.float64, copy=False).ravel() for p in parts if p is not None]
    flat = np.concatenate(present) if present else np.empty(0)
    mask = pa.array(missing) if missing.any() else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float64()), mask=mask)


def _text_array(column: Column, parts: list[np.ndarray | None], rows: np.ndarray) -> pa.Array:
    values: list[str | list[str] | None] = []
    for part, count in zip(parts, rows.tolist()):
        if part is None:
            values.extend([None] * count)
            continue
        for row in part.tolist():
            texts = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row]
            values.append(texts[0] if column.scalar else texts)
    return pa.array(values, column.type)

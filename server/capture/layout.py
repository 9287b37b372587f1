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
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from server.capture.captured import SHADOW_ENDED, Captured
from server.capture.record import (
    BASE_SCHEMA,
    INPUT_PREFIX,
    OUTPUT_PREFIX,
    SHADOW_PREFIX,
    SHADOW_VERSION,
    CaptureRecord,
)
from server.contract.manifest import ModelManifest, TensorSpec
from server.request import Tensors


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
        when a request's tensors do not fit it."""
        rows = np.array([item.rows for item in items], dtype=np.int64)
        total = int(rows.sum())
        owner = np.repeat(np.arange(len(items)), rows)  # the item each row comes from
        starts = np.concatenate(([0], np.cumsum(rows)[:-1]))
        ids = pa.array([item.request_id for item in items], pa.string())
        protocols = pa.array([item.protocol for item in items], pa.string())
        ts_us = np.array([round(item.ts * 1_000_000) for item in items], dtype=np.int64)
        take = pa.array(owner)
        arrays: list[pa.Array] = [
            ids.take(take),
            pa.array((np.arange(total) - starts[owner]).astype(np.int32)),
            pa.array(ts_us[owner], pa.timestamp("us", tz="UTC")),
            pa.array(np.full(total, self.model, dtype=object), pa.string()),
            pa.array(np.full(total, self.version, dtype=np.int32)),
            protocols.take(take),
        ]
        for columns, of in ((self.inputs, _inputs), (self.outputs, _outputs)):
            for column in columns:
                arrays.append(_array(column, [of(item).get(column.tensor) for item in items], rows))
        answered = [item.shadow_outputs if item.shadow_state == SHADOW_ENDED else None for item in items]
        shadow_versions = np.array(
            [item.shadow_version if outputs is not None else 0 for item, outputs in zip(items, answered)],
            dtype=np.int32,
        )
        arrays.append(pa.array(shadow_versions[owner], pa.int32(), mask=np.repeat([a is None for a in answered], rows)))
        for column in self.outputs:
            shadow = Column(SHADOW_PREFIX + column.tensor, column.tensor, None, column.text, column.scalar)
            arrays.append(_array(shadow, [None if a is None else a.get(column.tensor) for a in answered], rows))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def records(table: pa.Table) -> list[CaptureRecord]:
    """A capture table's rows as `CaptureRecord`s (for the served index)."""
    columns = table.to_pydict()
    names = table.column_names
    ins = [(n, n.removeprefix(INPUT_PREFIX)) for n in names if n.startswith(INPUT_PREFIX)]
    outs = [(n, n.removeprefix(OUTPUT_PREFIX)) for n in names if n.startswith(OUTPUT_PREFIX)]
    shadows = [(n, n.removeprefix(SHADOW_PREFIX)) for n in names if n.startswith(SHADOW_PREFIX)]
    result: list[CaptureRecord] = []
    for i in range(table.num_rows):
        shadow_version = columns["shadow_version"][i]
        ts: datetime = columns["ts"][i]
        result.append(
            CaptureRecord(
                request_id=columns["request_id"][i],
                row=columns["row"][i],
                ts=ts.astimezone(UTC),
                model=columns["model"][i],
                version=columns["version"][i],
                protocol=columns["protocol"][i],
                inputs={key: columns[name][i] for name, key in ins},
                outputs={key: columns[name][i] for name, key in outs},
                shadow_version=shadow_version,
                shadow_outputs=None
                if shadow_version is None
                else {key: columns[name][i] for name, key in shadows if columns[name][i] is not None},
            )
        )
    return result


def _inputs(item: Captured) -> Tensors:
    return item.inputs


def _outputs(item: Captured) -> Tensors:
    return item.outputs


def _column(prefix: str, spec: TensorSpec, batch_axis: bool) -> Column:
    per_row = spec.shape[1:] if batch_axis else spec.shape
    scalar = all(d > 0 for d in per_row) and math.prod(per_row) == 1
    return Column(prefix + spec.name, spec.name, None, text=spec.datatype == "BYTES", scalar=scalar)


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

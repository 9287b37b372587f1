"""`CaptureRecord`: one captured row of model input and output, and its Parquet columns;
`ServedRows`: a batch of captured rows, column by column, as the served index reads them.

The contract between capture (which writes), the served index and live quality (which read
`ServedRows` as the writer thread hands them over) and retraining (which reads the Parquet files).
One record per ROW of model input: a v1 request with 3 instances gives rows 0, 1, 2; a v2
request's batch axis likewise.

Parquet layout on the sink: `<root>/<model>/version=<v>/hour=<YYYY-MM-DDTHH>/<file>.parquet`
(hive-style partitions). Columns, in this order:

    request_id string, row int32, ts timestamp[us, tz=UTC], model string, version int32,
    protocol string, in.<name>..., out.<name>..., shadow_version int32 (nullable),
    shadow.<name>...

An `in.`/`out.`/`shadow.` column is float64 for a one-value numeric row, string for text, and
list<float64> (list<string> for text) for a row of several values. For a version with a feature
spec, its feature input appears as one `in.<feature>` column per feature name (the assembled row
after the feature join, whichever protocol carried it); other inputs by tensor name. Columns
are fixed per version (a version has one signature), so the files of one version share a schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.types as pat

CaptureValue = float | str | list[float] | list[str]
"""One row's value of one tensor: a scalar when the row is one value, else the flat list."""

INPUT_PREFIX = "in."
OUTPUT_PREFIX = "out."
SHADOW_PREFIX = "shadow."

HOUR_FORMAT = "%Y-%m-%dT%H"
"""The `hour=` partition value: UTC hour of the answer."""

BASE_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
    ]
)
"""The columns every capture file starts with."""

SHADOW_VERSION = pa.field("shadow_version", pa.int32(), nullable=True)


@dataclass(slots=True)
class CaptureRecord:
    """One captured row: what a version was asked and what it answered (and its shadow, if any).

    Treat as immutable. For tests and tools (`records_to_table`); the server's writer builds
    whole columns, never a record per row."""

    request_id: str
    """The request id the server echoed (`x-request-id`, the client's or generated)."""
    row: int
    """Index of the row within the request."""
    ts: datetime
    """When answered (UTC, aware)."""
    model: str
    version: int
    """The version that answered."""
    protocol: str
    """`v1`, `v2` or `grpc`."""
    inputs: dict[str, CaptureValue]
    """The model's input as it ran: v1 (and any version with a feature spec) by feature name,
    else by input tensor name."""
    outputs: dict[str, CaptureValue]
    """That row's value(s) per output tensor name."""
    shadow_version: int | None = None
    """The shadow version whose copy of the request ran and answered; None otherwise."""
    shadow_outputs: dict[str, CaptureValue] | None = None
    """The shadow's outputs for this row, when it answered."""


@dataclass(frozen=True, slots=True)
class ServedRows:
    """Captured rows of ONE version, column by column: what the served index and the label-free
    estimate read of them (who asked, when, what was answered), never the inputs.

    Built once per batch from the capture table (`of_table`, a few Arrow-to-list conversions, no
    object per row); `of_records` groups `CaptureRecord`s the same way (tests, tools)."""

    model: str
    version: int
    request_ids: Sequence[str]
    rows: Sequence[int]
    """Each row's index within its request."""
    ts: Sequence[float]
    """When answered, epoch seconds (UTC)."""
    outputs: dict[str, Sequence[CaptureValue | None]]
    """Every output's column (a value per row; None where the table holds null)."""
    text_lists: frozenset[str]
    """The outputs that are lists of text (the served index keeps neither theirs nor the shadow's)."""
    shadow_versions: Sequence[int | None] | None = None
    """Per row, the shadow version whose copy answered it; None when no row had a shadow answer."""
    shadow_outputs: dict[str, Sequence[CaptureValue | None]] | None = None
    """The shadow's output columns (null where it did not answer); with `shadow_versions`."""

    def __len__(self) -> int:
        return len(self.request_ids)

    @classmethod
    def of_table(cls, table: pa.Table, model: str, version: int) -> ServedRows:
        """The rows of a capture table (`records_to_table`'s or the writer's layout)."""
        names = table.column_names
        text_lists = frozenset(
            field.name.removeprefix(OUTPUT_PREFIX)
            for field in table.schema
            if field.name.startswith(OUTPUT_PREFIX) and pat.is_list(field.type) and pat.is_string(field.type.value_type)
        )
        ts = (table.column("ts").cast(pa.int64()).to_numpy() / 1e6).tolist()
        outputs: dict[str, Sequence[CaptureValue | None]] = {
            n.removeprefix(OUTPUT_PREFIX): _values(table.column(n)) for n in names if n.startswith(OUTPUT_PREFIX)
        }
        shadow = table.column("shadow_version")
        shadow_versions: list[int | None] | None = None
        shadow_outputs: dict[str, Sequence[CaptureValue | None]] | None = None
        if shadow.null_count < len(shadow):
            shadow_versions = shadow.to_pylist()
            shadow_outputs = {
                n.removeprefix(SHADOW_PREFIX): _values(table.column(n)) for n in names if n.startswith(SHADOW_PREFIX)
            }
        return cls(
            model,
            version,
            table.column("request_id").to_pylist(),
            table.column("row").to_pylist(),
            ts,
            outputs,
            text_lists,
            shadow_versions,
            shadow_outputs,
        )

    @classmethod
    def of_records(cls, records: Sequence[CaptureRecord]) -> list[ServedRows]:
        """Records grouped by version (in order of first appearance), each group as columns."""
        groups: dict[tuple[str, int], list[CaptureRecord]] = {}
        for record in records:
            groups.setdefault((record.model, record.version), []).append(record)
        return [cls.of_table(records_to_table(group), *key) for key, group in groups.items()]


def _values(column: pa.ChunkedArray) -> list[Any]:
    if column.null_count == 0 and pat.is_floating(column.type):
        return column.to_numpy().tolist()  # type: ignore[no-any-return]
    return column.to_pylist()  # type: ignore[no-any-return]


def partition_dir(model: str, version: int, ts: datetime) -> str:
    """The partition of a record, relative to the sink's root."""
    return f"{model}/version={version}/hour={ts.astimezone(UTC).strftime(HOUR_FORMAT)}"


def value_type(value: CaptureValue) -> pa.DataType:
    """The Arrow type of one value's column (see the module docstring)."""
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, list):
        return pa.list_(pa.string() if value and isinstance(value[0], str) else pa.float64())
    return pa.float64()


def records_to_table(records: Sequence[CaptureRecord]) -> pa.Table:
    """Records of ONE version as an Arrow table in the capture schema (row by row: for tests,
    tools and small batches; the writer builds its columns from whole tensors)."""
    if not records:
        raise ValueError("records_to_table needs at least one record")
    first = records[0]
    fields = list(BASE_SCHEMA)
    columns: list[list[object]] = [
        [r.request_id for r in records],
        [r.row for r in records],
        [r.ts.astimezone(UTC) for r in records],
        [r.model for r in records],
        [r.version for r in records],
        [r.protocol for r in records],
    ]

    def add(
        prefix: str, values: Iterable[tuple[str, CaptureValue]], rows: list[dict[str, CaptureValue] | None]
    ) -> None:
        for name, sample in values:
            fields.append(pa.field(prefix + name, value_type(sample)))
            columns.append([None if row is None else row.get(name) for row in rows])

    add(INPUT_PREFIX, first.inputs.items(), [r.inputs for r in records])
    add(OUTPUT_PREFIX, first.outputs.items(), [r.outputs for r in records])
    fields.append(SHADOW_VERSION)
    columns.append([r.shadow_version for r in records])
    shadow_sample = next((r.shadow_outputs for r in records if r.shadow_outputs), None)
    if shadow_sample:
        add(SHADOW_PREFIX, shadow_sample.items(), [r.shadow_outputs for r in records])
    schema = pa.schema(fields)
    return pa.table([pa.array(column, type=field.type) for column, field in zip(columns, schema)], schema=schema)

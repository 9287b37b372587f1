"""The training table of a retrain: captured rows of a window joined with their labels.

Reads the capture contract's Parquet (`server/capture/record.py`): answered rows under
`<root>/<model>/version=<v>/hour=<H>/`, labels under `<root>/<model>/labels/hour=<H>/`. The
features are the `in.<feature>` columns (the row the model ran on, after the feature join) in
the model's input order, or the input tensor's list column when a version captured it whole.
One row per (request id, row): the last capture and the last label of each win (the sink is
at-least-once). Rows are ordered by answer time, so the newest slice can be held out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs

from server.capture.record import HOUR_FORMAT, INPUT_PREFIX
from training.retrain.sink import Sink
from training.tasks import ClassNames, Task

LABELS_DIR = "labels"
KEY = ["request_id", "row"]
_HOUR = ds.partitioning(pa.schema([("hour", pa.string())]), flavor="hive")


class TableError(ValueError):
    """The captured rows cannot make a training table (names the version and column at fault)."""


@dataclass(frozen=True)
class Window:
    """Rows answered in [start, end), UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must carry a time zone")
        if not self.start < self.end:
            raise ValueError(f"empty window: {self.start.isoformat()} is not before {self.end.isoformat()}")


@dataclass(frozen=True)
class TableSpec:
    """What the model reads: its feature columns in input order and the tensor they form."""

    model: str
    columns: list[str]
    input_name: str
    task: Task
    classes: ClassNames | None = None


@dataclass(frozen=True)
class TableCounts:
    captured_rows: int
    """Distinct (request id, row) answered in the window by versions with the model's features."""
    labels_read: int
    """Distinct labelled (request id, row) in the sink."""
    labelled_rows: int
    """Rows of the table: captured, labelled and usable."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Rows not used, by reason (a version without these features, a missing value, a bad label)."""


@dataclass(frozen=True)
class TrainingTable:
    """Labelled served rows, oldest first (ties by request id and row)."""

    features: np.ndarray
    """float32 [N, len(columns)], the model's raw input."""
    targets: np.ndarray
    """float32 0/1 (binary) or values (regression); int64 class indices (multiclass)."""
    ts: np.ndarray
    """Answer times, datetime64[us] UTC, ascending."""
    versions: np.ndarray
    request_ids: np.ndarray
    rows: np.ndarray
    counts: TableCounts

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def split(self, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, holdout) row indices: the newest `holdout_fraction` of rows are held out."""
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout fraction must be in (0, 1), got {holdout_fraction}")
        n = len(self)
        held = min(n - 1, max(1, round(n * holdout_fraction)))
        return np.arange(n - held), np.arange(n - held, n)

    def write(self, path: Path, columns: list[str]) -> None:
        """The table as Parquet (what the version's lineage digests and points at)."""
        table = pa.table(
            {
                "request_id": self.request_ids,
                "row": pa.array(self.rows, pa.int32()),
                "ts": pa.array(self.ts, pa.timestamp("us", tz="UTC")),
                "version": pa.array(self.versions, pa.int32()),
                **{name: self.features[:, i] for i, name in enumerate(columns)},
                "label": self.targets,
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


def _ts(value: datetime) -> pa.Scalar:
    return pa.scalar(value.astimezone(UTC), pa.timestamp("us", tz="UTC"))


def _window_filter(window: Window) -> ds.Expression:
    start_hour, end_hour = (t.astimezone(UTC).strftime(HOUR_FORMAT) for t in (window.start, window.end))
    return (
        (ds.field("hour") >= start_hour)
        & (ds.field("hour") <= end_hour)
        & (ds.field("ts") >= _ts(window.start))
        & (ds.field("ts") < _ts(window.end))
    )


def _versions(sink: Sink, model: str) -> list[int]:
    selector = fs.FileSelector(sink.path(model), allow_not_found=True)
    found = []
    for info in sink.filesystem.get_file_info(selector):
        name = info.base_name
        if info.type == fs.FileType.Directory and name.startswith("version=") and name[8:].isdigit():
            found.append(int(name[8:]))
    return sorted(found)


def _numeric(column: pa.ChunkedArray, name: str, version: int) -> np.ndarray:
    """A feature column as float64 (text parsed as numbers; null -> NaN)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        values = pd.Series(column.to_pandas(), dtype="string")
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            raise TableError(
                f"version {version}: column {INPUT_PREFIX}{name}: text value {values[bad].iloc[0]!r} is not a "
                "number; retraining trains numeric features"
            )
        numbers: np.ndarray = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        return numbers
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)):
        raise TableError(f"version {version}: column {INPUT_PREFIX}{name} holds {column.type}, not one number a row")
    floats: np.ndarray = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return floats


def _tensor(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A list<float64> input column as [N, width]; rows of another length are NaN (left out)."""
    flat = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(flat), 0).to_numpy(zero_copy_only=False)
    out = np.full((len(flat), width), np.nan)
    ok = lengths == width
    if ok.any():
        values = pc.list_flatten(flat.filter(pa.array(ok))).cast(pa.float64()).to_numpy(zero_copy_only=False)
        out[ok] = values.reshape(-1, width)
    return out


def _captured(sink: Sink, spec: TableSpec, window: Window, left_out: Counter[str]) -> pd.DataFrame:
    """Every captured row of the window with the model's features, one column per feature."""
    frames = []
    where = _window_filter(window)
    for version in _versions(sink, spec.model):
        dataset = ds.dataset(
            sink.path(spec.model, f"version={version}"),
            filesystem=sink.filesystem,
            format="parquet",
            partitioning=_HOUR,
        )
        names = set(dataset.schema.names)
        per_feature = [INPUT_PREFIX + c for c in spec.columns]
        tensor = INPUT_PREFIX + spec.input_name
        if set(per_feature) <= names:
            wanted = per_feature
        elif tensor in names:
            wanted = [tensor]
        else:
            rows = dataset.count_rows(filter=where)
            if rows:
                left_out[f"version {version} lacks the model's features"] += rows
            continue
        table = dataset.to_table(columns=["request_id", "row", "ts", *wanted], filter=where)
        if table.num_rows == 0:
            continue
        if wanted == per_feature:
            matrix = np.stack([_numeric(table[c], n, version) for c, n in zip(wanted, spec.columns)], axis=1)
        else:
            matrix = _tensor(table[tensor], len(spec.columns))
        frame = pd.DataFrame(matrix, columns=per_feature)
        frame.insert(0, "request_id", table["request_id"].to_numpy(zero_copy_only=False))
        frame.insert(1, "row", table["row"].to_numpy(zero_copy_only=False).astype(np.int64))
        frame.insert(2, "ts", table["ts"].to_numpy(zero_copy_only=False).astype("datetime64[us]"))
        frame.insert(3, "version", version)
        frames.append(frame)
    if not frames:
        empty = {"request_id": pd.Series(dtype=object), "row": pd.Series(dtype=np.int64)}
        empty.update(ts=pd.Series(dtype="datetime64[us]"), version=pd.Series(dtype=np.int64))
        empty.update({INPUT_PREFIX + c: pd.Series(dtype=np.float64) for c in spec.columns})
        return pd.DataFrame(empty)
    captured = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable")
    return captured.drop_duplicates(KEY, keep="last")


def _labels(sink: Sink, model: str) -> pd.DataFrame:
    """The last label of each (request id, row) in the sink."""
    path = sink.path(model, LABELS_DIR)
    if sink.filesystem.get_file_info(path).type != fs.FileType.Directory:
        return pd.DataFrame(
            {
                "request_id": pd.Series(dtype=object),
                "row": pd.Series(dtype=np.int64),
                "label": pd.Series(dtype=np.float64),
                "label_ts": pd.Series(dtype="datetime64[us]"),
            }
        )
    table = ds.dataset(path, filesystem=sink.filesystem, format="parquet", partitioning=_HOUR).to_table(
        columns=["request_id", "row", "label", "ts"]
    )
    frame = pd.DataFrame(
        {
            "request_id": table["request_id"].to_numpy(zero_copy_only=False),
            "row": table["row"].to_numpy(zero_copy_only=False).astype(np.int64),
            "label": table["label"].cast(pa.float64()).to_numpy(zero_copy_only=False),
            "label_ts": table["ts"].to_numpy(zero_copy_only=False).astype("datetime64[us]"),
        }
    )
    return frame.sort_values("label_ts", kind="stable").drop_duplicates(KEY, keep="last")


def _targets(labels: np.ndarray, spec: TableSpec) -> tuple[np.ndarray, np.ndarray]:
    """(targets, usable mask): labels of the task's kind; others are left out."""
    finite = np.isfinite(labels)
    if spec.task == "regression":
        return labels.astype(np.float32), finite
    whole = finite & np.isclose(labels, np.round(np.nan_to_num(labels)), rtol=0.0, atol=1e-9)
    codes = np.round(np.nan_to_num(labels)).astype(np.int64)
    if spec.task == "binary":
        return codes.astype(np.float32), whole & np.isin(codes, (0, 1))
    classes = spec.classes or []
    if all(isinstance(c, int) for c in classes):  # whole-number classes: the label is the class
        known = np.asarray(classes, dtype=np.int64)
        index = np.searchsorted(known, codes).clip(0, max(len(known) - 1, 0))
        return index.astype(np.int64), whole & (known[index] == codes)
    return codes, whole & (codes >= 0) & (codes < len(classes))  # text classes: the label is the index


def build_table(sink: Sink, spec: TableSpec, window: Window) -> TrainingTable:
    """Captured rows of `window` joined with their labels, deduplicated, oldest first."""
    left_out: Counter[str] = Counter()
    captured = _captured(sink, spec, window, left_out)
    labels = _labels(sink, spec.model)
    joined = captured.merge(labels, on=KEY, how="inner", validate="one_to_one")
    joined = joined.sort_values(["ts", *KEY], kind="stable").reset_index(drop=True)
    feature_columns = [INPUT_PREFIX + c for c in spec.columns]
    features = joined[feature_columns].to_numpy(dtype=np.float64)
    complete = np.isfinite(features).all(axis=1)
    targets, valid = _targets(joined["label"].to_numpy(dtype=np.float64), spec)
    left_out["missing or non-finite feature value"] += int((~complete).sum())
    left_out[f"label not valid for a {spec.task} model"] += int((complete & ~valid).sum())
    keep = complete & valid
    return TrainingTable(
        features=features[keep].astype(np.float32),
        targets=targets[keep],
        ts=joined["ts"].to_numpy()[keep],
        versions=joined["version"].to_numpy(dtype=np.int64)[keep],
        request_ids=joined["request_id"].to_numpy(dtype=object)[keep],
        rows=joined["row"].to_numpy(dtype=np.int64)[keep],
        counts=TableCounts(
            captured_rows=len(captured),
            labels_read=len(labels),
            labelled_rows=int(keep.sum()),
            left_out={reason: rows for reason, rows in left_out.items() if rows},
        ),
    )

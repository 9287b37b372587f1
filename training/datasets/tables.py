"""Users' CSV/Parquet tables (and the tabular demos' frames) -> validated float32 feature matrix + task targets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from server.contract.tables import TableFormat, table_format
from training.datasets.dataset import Dataset, DatasetError, DatasetSpec
from training.datasets.labels import encode_labels

DEFAULT_LABEL = "label"
READERS: dict[TableFormat, Callable[[Path], Any]] = {".csv": pd.read_csv, ".parquet": pd.read_parquet}


def read_table(path: Path) -> pd.DataFrame:
    """Read a `.csv` or `.parquet` file into a DataFrame."""
    source = str(path)
    try:
        reader = READERS[table_format(path)]
    except ValueError as exc:
        raise DatasetError(source, str(exc)) from None
    try:
        frame = reader(path)
    except pd.errors.EmptyDataError:
        raise DatasetError(source, "table is empty (no columns or rows)") from None
    except (ValueError, OSError) as exc:
        raise DatasetError(source, f"cannot read {path.suffix} file: {exc}") from exc
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(source, f"reader returned {type(frame).__name__}, not a table")
    return frame


def _text_column_advice(column: str, entity_key: str | None, categorical: list[str]) -> str:
    """What to do about a feature column holding text: features are numbers, an id is not a feature,
    and a categorical feature holds whole-number category codes."""
    leave_out = "leave it out of the features with --features a,b,..."
    if column in categorical:
        return (
            f"; a --categorical feature holds whole-number category codes (0, 1, 2, ...): replace {column}'s "
            f"text by codes in the table (pandas: df[{column!r}] = df[{column!r}].astype('category').cat.codes), "
            f"or {leave_out}"
        )
    if entity_key is None:
        return f"; if it identifies entities (a customer id), give --entity-key {column}, or {leave_out}"
    return f"; {leave_out}, or encode it as numbers"


def _numeric_column(frame: pd.DataFrame, column: str, source: str, advice: str = "") -> np.ndarray:
    """The column as float64; refuses non-numeric values (with `advice`) and NaN/missing cells, naming the first one."""
    values = frame[column]
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(np.float64)
    converted = pd.to_numeric(values, errors="coerce")
    not_numeric = converted.isna() & values.notna()
    if not_numeric.any():
        row = int(np.flatnonzero(not_numeric.to_numpy())[0])
        raise DatasetError(
            source,
            f"non-numeric value {values.iloc[row]!r} at row {row} ({int(not_numeric.sum())} non-numeric rows)" + advice,
            column,
        )
    array: np.ndarray = converted.to_numpy(dtype=np.float64)
    missing = ~np.isfinite(array)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DatasetError(
            source, f"NaN, infinite or missing value at row {row} ({int(missing.sum())} such rows)", column
        )
    return array


def _require_columns(frame: pd.DataFrame, wanted: list[str], role: str, source: str) -> None:
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DatasetError(
            source, f"{role} column missing from the table (columns present: {list(frame.columns)})", missing[0]
        )


def _subset(chosen: list[str], of: list[str], role: str, source: str) -> None:
    outside = [c for c in chosen if c not in of]
    if outside:
        raise DatasetError(source, f"{role} column is not one of the features {of}", outside[0])


def tabular_dataset(frame: pd.DataFrame, spec: DatasetSpec, sha256: str) -> Dataset:
    """Validate a table against `spec` and return the dataset with the spec's defaults resolved."""
    source = spec.source
    label = spec.label or DEFAULT_LABEL
    _require_columns(frame, [label], "label", source)
    if spec.entity_key is not None:
        _require_columns(frame, [spec.entity_key], "entity key", source)
    excluded = {label, spec.entity_key}
    features = spec.features if spec.features is not None else [c for c in frame.columns if c not in excluded]
    if not features:
        raise DatasetError(source, "no feature columns: give --features or add columns besides the label")
    _require_columns(frame, features, "feature", source)
    overlap = [c for c in features if c in excluded]
    if overlap:
        raise DatasetError(source, "listed as a feature and as the label or entity key", overlap[0])
    if len(frame) == 0:
        raise DatasetError(source, f"table is empty: 0 rows (columns: {list(frame.columns)})")

    categorical = list(spec.categorical or [])
    _subset(categorical, features, "categorical", source)
    request = list(spec.request_features) if spec.request_features is not None else list(features)
    _subset(request, features, "request feature", source)
    store = [c for c in features if c not in request]
    if store and spec.entity_key is None:
        raise DatasetError(source, f"store features {store} need an entity key column (--entity-key)")

    inputs = np.stack(
        [_numeric_column(frame, c, source, _text_column_advice(c, spec.entity_key, categorical)) for c in features],
        axis=1,
    ).astype(np.float32)
    labels = encode_labels(frame[label], spec.task, label, source)

    resolved = spec.model_copy(
        update={
            "features": list(features),
            "label": label,
            "request_features": request,
            "categorical": categorical,
            "task": labels.task,
        }
    )
    return Dataset(
        spec=resolved,
        sha256=sha256,
        inputs=inputs,
        labels=labels.targets,
        task=labels.task,
        classes=labels.classes,
        task_note=labels.inferred,
        columns=tuple(features),
        categorical=tuple(categorical),
        request_features=tuple(request),
        store_features=tuple(store),
        entity_key=spec.entity_key,
        entity_key_type=(
            "INT64"
            if spec.entity_key is not None and pd.api.types.is_integer_dtype(frame[spec.entity_key])
            else "STRING"
        ),
        column_datatypes=tuple(_datatype(frame[c]) for c in features),
    )


def _datatype(values: pd.Series) -> str:
    """The feature view datatype of a numeric column's values."""
    if pd.api.types.is_bool_dtype(values):
        return "BOOL"
    if pd.api.types.is_integer_dtype(values):
        return "INT64"
    return "FP32"

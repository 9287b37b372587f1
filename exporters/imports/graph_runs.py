"""Running a foreign graph under onnxruntime (CPU) on check rows, for `pipeline.import_model`.

The importer runs the original file and every candidate it may publish on the same rows:
the reference table's, or generated ones. A graph with a batch axis runs the rows in chunks;
one without runs each sample alone and its outputs are stacked, so a "row" is one run and
`parity.compare` treats both alike. ZipMap outputs of the original come back as arrays with
one column per class, comparable with the tensor `--strip-zipmap` publishes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from exporters.errors import ExportError, ModelRefused
from server.contract.manifest import NUMPY_DTYPES, TensorSpec

CHUNK_ROWS = 256
"""Rows per run, bounding memory on large reference tables."""
GENERATED_ROWS = 64
"""Rows made up when no reference table is given (batch-axis graphs)."""
GENERATED_RUNS = 8
"""Samples made up for a graph without a batch axis: each is one run."""

Samples = list[dict[str, np.ndarray]]
"""Whole inputs of a graph without a batch axis, one dict per run."""


def open_session(path: Path, op_libraries: Sequence[Path] = ()) -> ort.InferenceSession:
    """A CPU session on `path` with the custom-op libraries registered; ModelRefused if it fails."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # converters' mis-declared shapes warn on every run
    try:
        for library in op_libraries:
            options.register_custom_ops_library(str(library))
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind types (Fail, InvalidGraph, ...)
        raise ModelRefused(path, f"onnxruntime cannot open it: {exc}") from exc


def generated_rows(specs: Sequence[TensorSpec], rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Made-up inputs of `rows` rows: standard normals, small integers, booleans, short strings.

    Dynamic axes other than the batch axis get size 1.
    """
    rng = np.random.default_rng(seed)
    return {spec.name: _random(rng, spec, [rows] + [d if d > 0 else 1 for d in spec.shape[1:]]) for spec in specs}


def generated_samples(specs: Sequence[TensorSpec], runs: int, seed: int = 0) -> Samples:
    """Made-up whole inputs for a graph without a batch axis (dynamic axes get size 1)."""
    rng = np.random.default_rng(seed)
    return [
        {spec.name: _random(rng, spec, [d if d > 0 else 1 for d in spec.shape]) for spec in specs} for _ in range(runs)
    ]


def _random(rng: np.random.Generator, spec: TensorSpec, shape: list[int]) -> np.ndarray:
    dtype = NUMPY_DTYPES[spec.datatype]
    if spec.datatype == "BYTES":
        return rng.choice(np.array(["a", "b", "c"], dtype=object), size=shape)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 4, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def run_rows(
    session: ort.InferenceSession, inputs: Mapping[str, np.ndarray], zipmaps: Mapping[str, Sequence[Any]] | None = None
) -> list[np.ndarray]:
    """Every output on `inputs`, run in chunks of CHUNK_ROWS rows and concatenated."""
    total = len(next(iter(inputs.values())))
    pieces = [
        _run(session, {name: array[start : start + CHUNK_ROWS] for name, array in inputs.items()}, zipmaps)
        for start in range(0, total, CHUNK_ROWS)
    ]
    return [np.concatenate(parts) for parts in zip(*pieces, strict=True)]


def run_samples(
    session: ort.InferenceSession, samples: Samples, zipmaps: Mapping[str, Sequence[Any]] | None = None
) -> list[np.ndarray]:
    """Every output of each run, stacked on a new first axis (one "row" per run)."""
    runs = [_run(session, sample, zipmaps) for sample in samples]
    return [np.stack(parts) for parts in zip(*runs, strict=True)]


def _run(
    session: ort.InferenceSession, inputs: Mapping[str, np.ndarray], zipmaps: Mapping[str, Sequence[Any]] | None
) -> list[np.ndarray]:
    try:
        values = session.run(None, dict(inputs))
    except Exception as exc:  # onnxruntime's own error types
        raise ExportError(f"onnxruntime failed to run the graph: {exc}") from exc
    names = [output.name for output in session.get_outputs()]
    return [_as_array(value, (zipmaps or {}).get(name)) for name, value in zip(names, values, strict=True)]


def _as_array(value: Any, classes: Sequence[Any] | None) -> np.ndarray:
    """A ZipMap's list of {class: probability} maps becomes [rows, classes] in `classes` order."""
    if classes is not None and isinstance(value, list):
        return np.array([[row[c] for c in classes] for row in value], dtype=np.float32)
    return np.asarray(value)


def check_batch_axis(
    path: Path,
    session: ort.InferenceSession,
    inputs: Mapping[str, np.ndarray],
    together: Sequence[np.ndarray],
    tolerance: float,
    zipmaps: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """The first axis must behave as a batch axis: every output has one row per input row, and
    rows do not influence each other (the rows run in two parts give what they give together)."""
    rows = len(next(iter(inputs.values())))
    names = [output.name for output in session.get_outputs()]
    for name, value in zip(names, together, strict=True):
        if value.ndim == 0 or value.shape[0] != rows:
            got = "a scalar" if value.ndim == 0 else f"shape {list(value.shape)}"
            raise ModelRefused(
                path,
                f"output {name!r} is {got} for {rows} input rows: the first axis "
                f"is not a batch axis; import with --no-batch to serve each "
                f"request as one run of the graph",
            )
    if rows < 2:
        return
    half = rows // 2
    parts = [
        run_rows(session, {n: a[:half] for n, a in inputs.items()}, zipmaps),
        run_rows(session, {n: a[half:] for n, a in inputs.items()}, zipmaps),
    ]
    for name, whole, first, second in zip(names, together, *parts, strict=True):
        split = np.concatenate([first, second])
        if whole.dtype.kind in "OSU" or split.dtype.kind in "OSU":
            same = bool(np.array_equal(whole, split))
        else:
            same = bool(np.allclose(whole, split, rtol=0.0, atol=tolerance, equal_nan=True))
        if not same:
            raise ModelRefused(
                path,
                f"output {name!r} changes when the rows run in two parts: rows "
                f"influence each other, so requests cannot share a batch; "
                f"import with --no-batch",
            )

"""Finding and loading the checkpoint to export (`training.checkpoints` is the only reader).

Accepts a version folder (`checkpoints/fraud/3`) or a model folder (`checkpoints/fraud`,
meaning its latest version) and turns every way a checkpoint can be unusable into one
`CheckpointUnusable` naming the path and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.errors import CheckpointUnusable
from server.contract.manifest import NUMPY_DTYPES
from training.checkpoints import CheckpointError, LoadedCheckpoint, latest_checkpoint, load_checkpoint

_VERSION_FILES = ("metadata.json", "checkpoint.pt")


def resolve_checkpoint(path: Path) -> Path:
    """The version folder `path` names: itself, or the latest version under a model folder."""
    if not path.exists():
        raise CheckpointUnusable(path, "no such file or directory")
    if not path.is_dir():
        raise CheckpointUnusable(
            path,
            "is a file; expected a version folder (checkpoints/<name>/<version>) "
            "or a model folder (checkpoints/<name>)",
        )
    if path.name.isdigit() or any((path / name).exists() for name in _VERSION_FILES):
        return path
    latest = latest_checkpoint(path.parent, path.name)
    if latest is None:
        raise CheckpointUnusable(path, "holds no checkpoint versions (numbered folders)")
    return latest


def open_checkpoint(path: Path) -> LoadedCheckpoint:
    """Load a version folder; every load failure becomes CheckpointUnusable."""
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointUnusable(path, exc.problem) from exc


def holdout_arrays(loaded: LoadedCheckpoint) -> dict[str, np.ndarray]:
    """Held-out rows per declared input, checked against the signature and cast to its datatype.

    onnxruntime refuses inputs of another dtype, and parity needs rows for every input.
    """
    labels = np.asarray(loaded.holdout_labels)
    arrays = {}
    for spec in loaded.metadata.inputs:
        rows = loaded.holdout_inputs.get(spec.name)
        if rows is None:
            raise CheckpointUnusable(
                loaded.path, f"held-out rows lack input {spec.name!r} (have {sorted(loaded.holdout_inputs)})"
            )
        if len(rows) == 0 or len(rows) != len(labels):
            raise CheckpointUnusable(
                loaded.path, f"held-out input {spec.name!r} has {len(rows)} rows for {len(labels)} labels"
            )
        expected, got = spec.shape[1:], list(np.shape(rows)[1:])
        if len(expected) != len(got) or any(e not in (-1, g) for e, g in zip(expected, got)):
            raise CheckpointUnusable(
                loaded.path, f"held-out input {spec.name!r} rows have shape {got}, the signature declares {expected}"
            )
        if spec.datatype == "BYTES":
            raise CheckpointUnusable(
                loaded.path, f"input {spec.name!r} has datatype {spec.datatype}, which parity cannot feed"
            )
        arrays[spec.name] = np.ascontiguousarray(rows, dtype=NUMPY_DTYPES[spec.datatype])
    return arrays

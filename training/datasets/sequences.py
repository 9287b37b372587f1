"""Built-in `demo:sequences`: float token sequences `[N, 32, 64]` with a planted motif, from a seed.

Positive rows carry a fixed motif vector added to a few random positions; the transformer
must find it among Gaussian noise. It exists to benchmark serving, so the task is modest.
"""

from __future__ import annotations

import numpy as np

from training.datasets.dataset import Dataset, DatasetError, DatasetSpec, demo_digest

GENERATOR_VERSION = 1
DEFAULT_ROWS = 2_000
SEQ_LEN = 32
TOKEN_DIM = 64
MOTIF_POSITIONS = 3
MOTIF_SCALE = 1.5
POSITIVE_RATE = 0.5


def generate(rows: int = DEFAULT_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tokens float32 `[rows, 32, 64]`, labels float32 `[rows]`)."""
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    motif_rng = np.random.default_rng(10_007)  # the motif is part of the task, not of the sample
    motif = motif_rng.normal(size=TOKEN_DIM)
    motif *= MOTIF_SCALE * np.sqrt(TOKEN_DIM) / np.linalg.norm(motif) / 4.0
    tokens = rng.normal(size=(rows, SEQ_LEN, TOKEN_DIM))
    labels = (rng.random(rows) < POSITIVE_RATE).astype(np.float32)
    for row in np.flatnonzero(labels):
        positions = rng.choice(SEQ_LEN, size=MOTIF_POSITIONS, replace=False)
        tokens[row, positions] += motif
    return tokens.astype(np.float32), labels


def load(spec: DatasetSpec) -> Dataset:
    """The demo as a Dataset; tabular options make no sense for token sequences and are refused."""
    tabular_options = {
        name: value
        for name, value in (
            ("features", spec.features),
            ("label", spec.label),
            ("entity_key", spec.entity_key),
            ("request_features", spec.request_features),
            ("categorical", spec.categorical),
        )
        if value is not None
    }
    if tabular_options:
        raise DatasetError(spec.source, f"token sequences take no tabular options; got {sorted(tabular_options)}")
    if spec.task not in (None, "binary"):
        raise DatasetError(spec.source, f"the token sequence demo is a binary task, not {spec.task}")
    rows = spec.rows or DEFAULT_ROWS
    tokens, labels = generate(rows, spec.seed)
    digest = demo_digest(
        "sequences", {"version": GENERATOR_VERSION, "rows": rows, "seed": spec.seed, "shape": [SEQ_LEN, TOKEN_DIM]}
    )
    return Dataset(
        spec=spec.model_copy(update={"rows": rows, "task": "binary"}), sha256=digest, inputs=tokens, labels=labels
    )

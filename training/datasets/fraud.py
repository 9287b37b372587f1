"""`demo:fraud` for training: the generated table (`demos/fraud.py`) as a frame, and its column roles."""

from __future__ import annotations

import pandas as pd

from demos.fraud import (
    CATEGORICAL,
    DEFAULT_ROWS,
    ENTITY_KEY,
    GENERATOR_VERSION,
    LABEL,
    REQUEST_FEATURES,
    STORE_FEATURES,
    columns,
)
from training.datasets.dataset import DatasetSpec

__all__ = [
    "DEFAULT_ROWS",
    "ENTITY_KEY",
    "GENERATOR_VERSION",
    "LABEL",
    "REQUEST_FEATURES",
    "STORE_FEATURES",
    "fill_defaults",
    "generate",
]


def generate(rows: int = DEFAULT_ROWS, seed: int = 0) -> pd.DataFrame:
    """The demo table: entity key, request features, store features and the `is_fraud` label."""
    return pd.DataFrame(columns(rows, seed))


def fill_defaults(spec: DatasetSpec) -> DatasetSpec:
    """The demo's label, entity key, request/store split, categorical columns and task where `spec` gives none."""
    features = spec.features if spec.features is not None else REQUEST_FEATURES + STORE_FEATURES
    return spec.model_copy(
        update={
            "features": features,
            "label": spec.label or LABEL,
            "entity_key": spec.entity_key or ENTITY_KEY,
            "request_features": (
                spec.request_features
                if spec.request_features is not None
                else [c for c in features if c in REQUEST_FEATURES]
            ),
            "categorical": (
                spec.categorical if spec.categorical is not None else [c for c in features if c in CATEGORICAL]
            ),
            "task": spec.task or "binary",
        }
    )

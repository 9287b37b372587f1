"""Fitted preprocessing of raw tabular features: fit on training rows, applied in numpy by the trainer.

The same fitted values become buffers of `tabular_layer.TabularPreprocessor`, so the exported
graph takes raw feature values and serving applies exactly what training applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

CLIP_QUANTILE = 0.001
"""Numeric columns are clipped to their [q, 1-q] training quantiles before standardisation."""
MAX_CATEGORIES = 32
"""Most frequent category values kept per categorical column; rarer or unseen ones encode as all zeros."""


class NumericColumn(BaseModel):
    """Clip to [lower, upper], then subtract `mean` and divide by `std` (both measured after clipping)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    lower: float
    upper: float
    mean: float
    std: float = Field(gt=0)


class CategoricalColumn(BaseModel):
    """One-hot encoding against the listed category values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    categories: list[float] = Field(min_length=1)


class TabularTransform(BaseModel):
    """Preprocessing of a raw `[N, len(columns)]` matrix into the network's `[N, output_dim]` input.

    Output layout: standardised numeric columns in `numeric` order, then each categorical
    column's one-hot block in `categorical` order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: list[str]
    numeric: list[NumericColumn]
    categorical: list[CategoricalColumn]

    @property
    def output_dim(self) -> int:
        return len(self.numeric) + sum(len(c.categories) for c in self.categorical)

    def numeric_indices(self) -> list[int]:
        return [self.columns.index(c.name) for c in self.numeric]

    def one_hot_sources(self) -> tuple[list[int], list[float]]:
        """For each one-hot output: the raw column index it reads and the category value it matches."""
        sources: list[int] = []
        values: list[float] = []
        for column in self.categorical:
            index = self.columns.index(column.name)
            sources.extend([index] * len(column.categories))
            values.extend(column.categories)
        return sources, values

    @classmethod
    def fit(
        cls,
        inputs: np.ndarray,
        columns: Sequence[str],
        categorical: Sequence[str] = (),
    ) -> TabularTransform:
        """Measure clipping bounds, standardisation stats and category values on training rows."""
        if inputs.ndim != 2 or inputs.shape[1] != len(columns):
            raise ValueError(f"expected a [N, {len(columns)}] matrix, got shape {list(inputs.shape)}")
        if inputs.shape[0] == 0:
            raise ValueError("cannot fit preprocessing on zero rows")
        unknown = [c for c in categorical if c not in columns]
        if unknown:
            raise ValueError(f"categorical columns {unknown} are not among the feature columns {list(columns)}")
        numeric: list[NumericColumn] = []
        encoded: list[CategoricalColumn] = []
        for index, name in enumerate(columns):
            values = inputs[:, index].astype(np.float64)
            if name in categorical:
                uniques, counts = np.unique(values, return_counts=True)
                keep = np.sort(uniques[np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]])
                encoded.append(CategoricalColumn(name=name, categories=[float(v) for v in keep]))
                continue
            lower, upper = np.quantile(values, [CLIP_QUANTILE, 1.0 - CLIP_QUANTILE])
            clipped = np.clip(values, lower, upper)
            std = float(clipped.std())
            numeric.append(
                NumericColumn(
                    name=name,
                    lower=float(lower),
                    upper=float(upper),
                    mean=float(clipped.mean()),
                    std=std if std > 1e-12 else 1.0,
                )
            )
        return cls(columns=list(columns), numeric=numeric, categorical=encoded)

    def apply(self, inputs: np.ndarray) -> np.ndarray:
        """The training pipeline's transform: raw `[N, columns]` -> float32 `[N, output_dim]`."""
        if inputs.ndim != 2 or inputs.shape[1] != len(self.columns):
            raise ValueError(f"expected a [N, {len(self.columns)}] matrix, got shape {list(inputs.shape)}")
        raw = inputs.astype(np.float32)
        numeric = raw[:, self.numeric_indices()]
        lower = np.array([c.lower for c in self.numeric], dtype=np.float32)
        upper = np.array([c.upper for c in self.numeric], dtype=np.float32)
        mean = np.array([c.mean for c in self.numeric], dtype=np.float32)
        std = np.array([c.std for c in self.numeric], dtype=np.float32)
        standardised = (np.minimum(np.maximum(numeric, lower), upper) - mean) / std
        sources, values = self.one_hot_sources()
        one_hot = (raw[:, sources] == np.array(values, dtype=np.float32)).astype(np.float32)
        return np.concatenate([standardised, one_hot], axis=1).astype(np.float32)

"""Built-in `demo:delivery`: food deliveries and the minutes each took (regression), from a seed.

Minutes grow with distance and order size, at rush hour and in the rain, and shrink with the
courier's experience; Gaussian noise of 4 minutes is what no model can explain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.datasets.dataset import DatasetSpec, demo_defaults

GENERATOR_VERSION = 1
DEFAULT_ROWS = 20_000
LABEL = "minutes"
ZONES = 6
CATEGORICAL = ["zone"]
NOISE_MINUTES = 4.0

_ZONE_MINUTES = np.array([0.0, 2.5, -1.5, 4.0, 1.0, 6.0])


def generate(rows: int = DEFAULT_ROWS, seed: int = 0) -> pd.DataFrame:
    """The demo table: five delivery features, a zone code and the `minutes` label."""
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    distance = np.round(rng.gamma(2.0, 1.6, size=rows), 2)
    items = rng.poisson(2.5, size=rows) + 1
    hour = rng.integers(0, 24, size=rows)
    raining = (rng.random(rows) < 0.2).astype(np.int64)
    tenure = np.round(rng.gamma(1.5, 10.0, size=rows), 1)
    zone = rng.integers(0, ZONES, size=rows)
    rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
    minutes = (
        12.0
        + 3.2 * distance
        + 0.9 * items
        + 6.0 * rush
        + 7.0 * raining * (1.0 + 0.1 * distance)
        - 2.0 * np.log1p(tenure)
        + _ZONE_MINUTES[zone]
        + rng.normal(0.0, NOISE_MINUTES, size=rows)
    )
    return pd.DataFrame(
        {
            "distance_km": distance,
            "items": items,
            "hour_of_day": hour,
            "is_raining": raining,
            "courier_tenure_months": tenure,
            "zone": zone,
            LABEL: np.round(np.maximum(minutes, 3.0), 1),
        }
    )


def fill_defaults(spec: DatasetSpec) -> DatasetSpec:
    return demo_defaults(
        spec,
        LABEL,
        ["distance_km", "items", "hour_of_day", "is_raining", "courier_tenure_months", "zone"],
        CATEGORICAL,
        "regression",
    )

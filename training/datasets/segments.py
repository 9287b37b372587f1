"""Built-in `demo:segments`: customers and the marketing segment each belongs to (multiclass, text labels), from a seed.

Each segment scores the customer's habits linearly; the segment with the highest score plus
Gumbel noise wins, so the classes overlap and no model beats about 77% accuracy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.datasets.dataset import DatasetSpec, demo_defaults

GENERATOR_VERSION = 1
DEFAULT_ROWS = 20_000
LABEL = "segment"
SEGMENTS = ["bargain", "business", "premium", "regular"]
REGIONS = 5
CATEGORICAL = ["region"]

# Per segment: weights of (log spend, visits, log tenure, online share) and an intercept.
_WEIGHTS = np.array(
    [
        [-2.0, 0.9, 0.0, 0.5, 0.0],  # bargain: spends little, comes often
        [1.0, -0.6, 1.2, -1.0, -0.3],  # business: large orders, rarely, long-standing, in store
        [2.2, 0.3, 0.6, 1.2, -0.8],  # premium: spends a lot, online
        [0.0, 0.0, 0.0, 0.0, 0.5],  # regular: the baseline
    ]
)
_REGION_BIAS = np.array(
    [
        [0.4, -0.2, 0.0, 0.3, 0.0],
        [-0.3, 0.5, 0.2, -0.4, 0.0],
        [0.0, 0.3, 0.6, -0.6, 0.2],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
).T  # [region, segment]


def generate(rows: int = DEFAULT_ROWS, seed: int = 0) -> pd.DataFrame:
    """The demo table: five customer features, a region code and the `segment` label."""
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    spend = np.round(np.exp(rng.normal(4.5, 0.9, size=rows)), 2)
    visits = rng.poisson(np.exp(rng.normal(1.3, 0.6, size=rows)))
    tenure = np.round(rng.gamma(2.0, 14.0, size=rows)) + 1
    online = np.round(rng.beta(2.0, 2.5, size=rows), 3)
    region = rng.integers(0, REGIONS, size=rows)
    habits = np.stack(
        [
            (np.log(spend) - 4.5) / 0.9,
            (visits - 4.0) / 3.0,
            (np.log(tenure) - 3.0) / 0.8,
            (online - 0.45) / 0.22,
            np.ones(rows),
        ],
        axis=1,
    )
    scores = 1.6 * habits @ _WEIGHTS.T + _REGION_BIAS[region] + rng.gumbel(size=(rows, len(SEGMENTS)))
    return pd.DataFrame(
        {
            "monthly_spend": spend,
            "visits_per_month": visits,
            "tenure_months": tenure,
            "online_share": online,
            "region": region,
            LABEL: np.asarray(SEGMENTS)[scores.argmax(axis=1)],
        }
    )


def fill_defaults(spec: DatasetSpec) -> DatasetSpec:
    return demo_defaults(
        spec,
        LABEL,
        ["monthly_spend", "visits_per_month", "tenure_months", "online_share", "region"],
        CATEGORICAL,
        "multiclass",
    )

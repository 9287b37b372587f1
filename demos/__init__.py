"""The built-in demo datasets, defined once for training, the feature store and the load tests.

`hotserve train --dataset demo:...` trains on them (`training/datasets/` turns them into
tensors); `demo:fraud`, the one with an entity key, also fills a feature store
(`HOTSERVE_FEATURE_TABLE=demo:fraud`, `hotserve features materialize demo:fraud`). numpy only:
the server's install reads `demo:fraud` without pandas or torch.
"""

from __future__ import annotations

DEMO_PREFIX = "demo:"

DEMOS: dict[str, str] = {
    "demo:fraud": "binary: card transactions, customers' aggregates served from the feature store",
    "demo:segments": "multiclass: customers and their marketing segment (text labels)",
    "demo:delivery": "regression: food deliveries and the minutes each took",
    "demo:sequences": "binary: float token sequences [N, 32, 64] for the transformer",
}
"""Every demo source, and what it is."""

ENTITY_TABLES = ("demo:fraud",)
"""Demos keyed by an entity: what a feature store can be filled from."""


def is_demo(source: str) -> bool:
    """Whether `source` names a demo (`demo:...`) rather than a file."""
    return source.startswith(DEMO_PREFIX)

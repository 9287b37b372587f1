"""`demo:fraud`: card transactions with per-customer aggregates, generated from a seed.

Request features describe the transaction; `cust_*` aggregates are what an online feature
store would hold per `customer_id`. Fraud (~4% of rows) depends on both, so a model that
joins store features beats one that sees the request alone. The same seed gives the same
table to training and to the feature store's fill, so served entities are the trained ones.
"""

from __future__ import annotations

import numpy as np

GENERATOR_VERSION = 2
"""Bump when the generator's output changes, so old digests never describe new data."""
DEFAULT_ROWS = 20_000
ROWS_PER_CUSTOMER = 20
MERCHANT_CATEGORIES = 12

LABEL = "is_fraud"
ENTITY_KEY = "customer_id"
REQUEST_FEATURES = ["amount", "merchant_category", "hour_of_day", "is_online", "distance_from_home_km"]
STORE_FEATURES = ["cust_txn_count_7d", "cust_avg_amount_30d", "cust_chargeback_rate_90d", "cust_account_age_days"]
CATEGORICAL = ["merchant_category"]

# Log-odds shift per merchant category (e.g. electronics and gift cards are riskier).
_CATEGORY_RISK = np.array([-1.0, -0.6, -0.5, 0.0, 0.0, 0.3, 0.5, 0.8, 1.3, 1.6, 2.1, -0.3])
_INTERCEPT = -8.6
# After the concept shift: fraud rings move to the merchant categories that were the safest,
# and from the night to the working day; amount, channel, distance and customers' risk weigh
# as before. A model trained before the shift falls from ~0.90 to ~0.80 AUC on it.
_SHIFTED_CATEGORY_RISK = _CATEGORY_RISK[::-1]


def _shifted_logit(
    ratio: np.ndarray, category: np.ndarray, hour: np.ndarray, online: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """The fraud pattern after the shift (the customer aggregates' part is added by the caller)."""
    logit: np.ndarray = (
        _INTERCEPT
        + 1.75 * np.log(ratio)
        + _SHIFTED_CATEGORY_RISK[category]
        + 1.6 * ((hour >= 10) & (hour <= 16))
        + 1.1 * online
        + 0.7 * np.log1p(distance)
    )
    return logit


def columns(rows: int = DEFAULT_ROWS, seed: int = 0, shifted: bool = False) -> dict[str, np.ndarray]:
    """The demo table by column, in order: entity key, request features, store features, `is_fraud` label.

    `shifted`: the same transactions and customers (the inputs' distribution is unchanged), but
    labelled by the fraud pattern after a concept shift (`_shifted_logit`): a model trained
    before it ranks the new fraud poorly, and nothing in its inputs or scores shows it.
    """
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    customers = max(1, rows // ROWS_PER_CUSTOMER)
    account_age = rng.gamma(shape=2.0, scale=400.0, size=customers).round() + 1
    avg_amount = np.exp(rng.normal(3.8, 0.7, size=customers))
    chargeback_rate = rng.beta(0.6, 40.0, size=customers)
    txn_count = rng.poisson(np.exp(rng.normal(2.3, 0.6, size=customers)))

    customer = rng.integers(0, customers, size=rows)
    amount = np.round(avg_amount[customer] * np.exp(rng.normal(0.0, 0.8, size=rows)), 2)
    category = rng.integers(0, MERCHANT_CATEGORIES, size=rows)
    hour = rng.integers(0, 24, size=rows)
    online = (rng.random(rows) < 0.35).astype(np.int64)
    distance = np.round(np.exp(rng.normal(1.5, 1.3, size=rows)), 1)

    customer_risk = (
        40.0 * chargeback_rate[customer] - 0.8 * np.log(account_age[customer] / 365.0) + 0.065 * txn_count[customer]
    )
    ratio = amount / avg_amount[customer]
    if shifted:
        logit = _shifted_logit(ratio, category, hour, online, distance) + customer_risk
    else:
        logit = (
            _INTERCEPT
            + 1.75 * np.log(ratio)
            + _CATEGORY_RISK[category]
            + 1.6 * ((hour <= 5) | (hour >= 23))
            + 1.1 * online
            + 0.7 * np.log1p(distance)
            + customer_risk
        )
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    return {
        ENTITY_KEY: np.char.add("c", customer.astype(str)),
        "amount": amount,
        "merchant_category": category,
        "hour_of_day": hour,
        "is_online": online,
        "distance_from_home_km": distance,
        "cust_txn_count_7d": txn_count[customer],
        "cust_avg_amount_30d": np.round(avg_amount[customer], 2),
        "cust_chargeback_rate_90d": np.round(chargeback_rate[customer], 4),
        "cust_account_age_days": account_age[customer],
        LABEL: label,
    }


def records(rows: int = DEFAULT_ROWS, seed: int = 0) -> tuple[list[str], list[dict[str, object]]]:
    """(column names, one mapping of plain Python values per row): the table as a feature store reads it."""
    table = columns(rows, seed)
    names = list(table)
    values = [table[name].tolist() for name in names]
    return names, [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]

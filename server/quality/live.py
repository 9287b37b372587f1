"""Live quality per model and version (control path, off the event loop).

From the joined pairs (`pairs.py`): the task's metrics by training's own definitions
(`metrics.py`), per window of served time and over the reported span, with the number of
labelled rows each figure rests on. Binary: auc, log_loss, accuracy at the model's threshold,
and calibration as the mean predicted probability beside the observed positive rate; multiclass:
accuracy, macro_f1 (and log_loss with class probabilities); regression: rmse, mae.

Before labels come, `ServedScores` keeps the scores this replica served lately, and the
label-free estimate (`estimate.py`) of them is exported beside the labelled figure and the
training figure; once labels come, the estimate of the labelled rows minus their measured figure
says how far the estimate was off.

The labelled figures are fleet-wide (the pairs are in Redis with a fleet); the estimate over all
served rows is this replica's traffic (each replica exports its own).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from server.capture.record import ServedRows
from server.errors import HotserveError
from server.metrics.instruments import Metrics
from server.quality.contract import QualityContract, QualityContracts
from server.quality.estimate import estimate
from server.quality.metrics import accuracy, evaluate_multiclass, log_loss, regression_errors, roc_auc
from server.quality.pairs import Pair, PairStore, window_of

log = logging.getLogger(__name__)


def measure(contract: QualityContract, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's live metrics of `scores` against `labels` ({} without rows)."""
    if labels.size == 0:
        return {}
    if contract.task == "regression":
        return regression_errors(scores, labels)
    if contract.task == "multiclass":
        if scores.ndim == 2 and scores.shape[1] >= 2:
            return evaluate_multiclass(scores, labels)
        # Only the class was output: accuracy and macro-F1 of the class as a one-hot score.
        classes = max(contract.class_count, len(contract.classes), int(max(scores.max(), labels.max())) + 1)
        one_hot = np.eye(classes)[scores.ravel().astype(np.int64)]
        figures = evaluate_multiclass(one_hot, labels)
        return {"accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"]}
    p = scores.ravel()
    figures = {
        "log_loss": log_loss(p, labels),
        "accuracy": accuracy(p, labels, contract.threshold),
        "predicted_positive_rate": float(np.mean(p)),
        "observed_positive_rate": float(np.mean(labels)),
    }
    if 0.0 < float(labels.mean()) < 1.0:
        figures["auc"] = roc_auc(p, labels)
    return figures


def score_matrix(contract: QualityContract, scores: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-row scores as quality computes on them: [N] for binary and regression, [N, K] (or [N]
    classes) for multiclass."""
    if contract.task == "multiclass":
        widths = {len(s) for s in scores}
        if len(widths) == 1 and widths != {1}:
            return np.asarray(scores, dtype=np.float64)
    return np.asarray([s[0] for s in scores], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Figures:
    """Quality of the rows answered in [since, until) that have labels."""

    since: float
    until: float
    labels: int
    metrics: dict[str, float] = field(default_factory=dict)
    estimate_error: dict[str, float] = field(default_factory=dict)
    """The label-free estimate of these same rows minus their measured figure."""

    def as_json(self) -> dict[str, object]:
        return {
            "since": self.since,
            "until": self.until,
            "labels": self.labels,
            "metrics": self.metrics,
            "estimate_error": self.estimate_error,
        }


def figures_of(contract: QualityContract, pairs: Sequence[Pair], since: float, until: float) -> Figures:
    kept = [p for p in pairs if since <= p.ts < until]
    if not kept:
        return Figures(since, until, 0)
    scores = score_matrix(contract, [p.score for p in kept])
    labels = np.asarray([p.label for p in kept], dtype=np.float64)
    measured = measure(contract, scores, labels)
    estimated = estimate(contract.task, scores, contract.threshold)
    error = {name: value - measured[name] for name, value in estimated.items() if name in measured}
    return Figures(since, until, len(kept), measured, error)


class ServedScores:
    """The scores this replica answered lately, per model and version (bounded), for the
    label-free estimate. `observe` is a served-index observer (capture's writer thread)."""

    def __init__(self, contracts: QualityContracts, max_rows: int) -> None:
        self._contracts = contracts
        self._max_rows = max_rows
        self._rows: dict[tuple[str, int], deque[tuple[float, list[float]]]] = {}
        self._lock = threading.Lock()

    def observe(self, served: ServedRows) -> None:
        contract = self._contracts.get(served.model, served.version)
        if contract is None or contract.task == "regression":
            return
        column = served.outputs.get(contract.output)
        if column is None:
            return
        scored = []
        for ts, value in zip(served.ts, column):
            score = contract.score({contract.output: value})
            if score is not None:
                scored.append((ts, score))
        if not scored:
            return
        key = (served.model, served.version)
        with self._lock:
            rows = self._rows.get(key)
            if rows is None:
                rows = self._rows[key] = deque(maxlen=self._max_rows)
            rows.extend(scored)

    def keys(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._rows)

    def estimate(self, contract: QualityContract, since: float) -> tuple[int, dict[str, float]]:
        """(rows, estimated metrics) of the rows answered since `since`."""
        with self._lock:
            rows = list(self._rows.get((contract.model, contract.version), ()))
        scores = [s for ts, s in rows if ts >= since]
        if not scores:
            return 0, {}
        return len(scores), estimate(contract.task, score_matrix(contract, scores), contract.threshold)


class LiveQuality:
    """Recomputes every known version's figures each `refresh_s` into the metrics, and answers
    the admin API's quality reports."""

    def __init__(
        self,
        pairs: PairStore,
        contracts: QualityContracts,
        served: ServedScores,
        metrics: Metrics,
        span_s: float,
        refresh_s: float,
        versions: Callable[[], Iterable[tuple[str, int]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pairs = pairs
        self.contracts = contracts
        self.served = served
        self._metrics = metrics
        self.span_s = span_s
        self._refresh_s = refresh_s
        self._versions = versions
        self._clock = clock

    def report(self, model: str, since: float | None = None, until: float | None = None) -> dict[str, object]:
        """Every version's figures over [since, until) (default: the last span) and per window,
        with the label-free estimate and the training figures. Blocking; raises LabelStoreUnavailable."""
        now = self._clock()
        until = now if until is None else until
        since = until - self.span_s if since is None else since
        versions = []
        for version in self.contracts.versions(model):
            contract = self.contracts.get(model, version)
            if contract is None:
                continue
            pairs = self.pairs.load(model, version, since, until)
            window_s = self.pairs.window_s
            windows = sorted({window_of(p.ts, window_s) for p in pairs})
            served_rows, estimated = self.served.estimate(contract, since)
            if not pairs and not served_rows:
                continue
            versions.append(
                {
                    "version": version,
                    "task": contract.task,
                    "total": figures_of(contract, pairs, since, until).as_json(),
                    "windows": [
                        figures_of(contract, pairs, max(since, w * window_s), min(until, (w + 1) * window_s)).as_json()
                        for w in windows
                    ],
                    "estimate": {"rows": served_rows, "metrics": estimated},
                    "reference": dict(contract.reference),
                }
            )
        return {"model": model, "since": since, "until": until, "window_s": self.pairs.window_s, "versions": versions}

    def refresh(self) -> None:
        """Publish every known version's figures over the last span (blocking)."""
        now = self._clock()
        keys = set(self._versions()) | set(self.served.keys())
        for model, version in sorted(keys):
            contract = self.contracts.get(model, version)
            if contract is None:
                continue
            try:
                pairs = self.pairs.load(model, version, now - self.span_s, now)
            except HotserveError as error:
                log.warning("live quality of %s version %d not refreshed: %s", model, version, error.message)
                continue
            figures = figures_of(contract, pairs, now - self.span_s, now)
            _, estimated = self.served.estimate(contract, now - self.span_s)
            self._metrics.record_quality(model, version, figures.labels, figures.metrics, figures.estimate_error)
            self._metrics.record_quality_estimate(model, version, estimated, contract.reference)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # one bad refresh must not end the loop
                log.exception("live quality refresh failed")
            await asyncio.sleep(self._refresh_s)

"""What a model version showed over a time window: mergeable, JSON-serialisable summaries.

Control path (read by guarded promotion, and by releases). Every count is a plain sum and every
histogram has fixed bounds, so two summaries merge by adding: the buckets of one load over time,
or the same window of every replica of the fleet. `to_json` / `from_json` carry a summary through
a store shared by replicas; the latency bounds travel with it, so replicas that disagree on them
(a rolling upgrade) refuse to merge rather than add unlike buckets.
"""

from __future__ import annotations

import math
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

LATENCY_BOUNDS_S: tuple[float, ...] = tuple(float(f"{50e-6 * 2 ** (i / 10):.3g}") for i in range(201))
"""Upper bounds (`le`) of the latency histogram: 50 us to 52 s, ten buckets per doubling (7% wide),
so an interpolated quantile is within a few % of the true value; one more bucket counts the rest.
The release's p99 gate reads its confidence bounds off bucket edges (a conservative rounding of up
to a bucket on each side): at four buckets per doubling a candidate 1.5x slower than production
could stay within a 1.3 bound whatever the sample, at ten it cannot."""


class _Summary(BaseModel):
    # Infinity (a shadow whose output shape differs) round-trips through JSON as a string.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class LatencyHistogram(_Summary):
    """Answers by latency: `counts[i]` answers took at most `bounds_s[i]` (and more than the bound
    before it); the last count is beyond the last bound."""

    bounds_s: tuple[float, ...] = LATENCY_BOUNDS_S
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS_S) + 1)

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        if self.bounds_s != other.bounds_s:
            raise ValueError("latency histograms with different bounds do not merge")
        return LatencyHistogram(bounds_s=self.bounds_s, counts=_add(self.counts, other.counts))

    def quantile(self, q: float) -> float | None:
        """The `q` quantile in seconds, interpolated within its bucket as Prometheus does; None when empty."""
        cumulative: dict[float, float] = {}
        total = 0
        for bound, count in zip((*self.bounds_s, math.inf), self.counts, strict=True):
            total += count
            cumulative[bound] = total
        return histogram_quantile(q, cumulative)


class CopyComparisons(_Summary):
    """Copies of requests a version answered beside the primary (shadow traffic), compared with it."""

    compared: int = 0
    agreed: int = 0
    dropped: int = 0
    """Copies never run: too many in flight, or the version's queue full."""
    failed: int = 0
    """Copies the version failed to answer."""
    max_abs_difference: float = 0.0
    """Largest absolute output difference seen (infinite: an output missing or of another shape)."""

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def merge(self, other: CopyComparisons) -> CopyComparisons:
        return CopyComparisons(
            compared=self.compared + other.compared,
            agreed=self.agreed + other.agreed,
            dropped=self.dropped + other.dropped,
            failed=self.failed + other.failed,
            max_abs_difference=max(self.max_abs_difference, other.max_abs_difference),
        )


class AnswerClasses(_Summary):
    """A version's answers on one protocol (`v1`, `v2`, `grpc`: its route), by status class."""

    ok: int = 0
    """Answered below 400 (2xx)."""
    client_errors: int = 0
    """4xx: a malformed request, or one the version could not take (queue full, a contract it lacks)."""
    server_errors: int = 0
    """5xx."""

    @property
    def total(self) -> int:
        return self.ok + self.client_errors + self.server_errors

    def merge(self, other: AnswerClasses) -> AnswerClasses:
        return AnswerClasses(
            ok=self.ok + other.ok,
            client_errors=self.client_errors + other.client_errors,
            server_errors=self.server_errors + other.server_errors,
        )


class PredictionHistogram(_Summary):
    """A version's predictions on the bins of its drift reference in model.json (`drift.prediction`)."""

    output: str
    bin_edges: tuple[float, ...]
    categories: tuple[float, ...] | None = None
    """Set for a categorical prediction: one bin per category, then one for any other value."""
    counts: tuple[int, ...]
    nan: int = 0
    """NaN values, in no bin."""

    def merge(self, other: PredictionHistogram) -> PredictionHistogram:
        if (self.output, self.bin_edges, self.categories) != (other.output, other.bin_edges, other.categories):
            raise ValueError(f"prediction histograms of {self.output!r} on different bins do not merge")
        return self.model_copy(update={"counts": _add(self.counts, other.counts), "nan": self.nan + other.nan})


class WindowSummary(_Summary):
    """What one model version showed over [since, until) (epoch seconds, bucket-aligned).

    Merging sums two summaries of the same version: adjacent windows of one load, or one window
    of several replicas; `loads` says which loads contributed (a reload is a new load).
    """

    model: str
    version: int
    since: float
    until: float
    loads: tuple[str, ...] = ()
    requests: int = 0
    """Answered requests routed to this version (every status but a client that left)."""
    errors: int = 0
    """Of them, answered with a server error (5xx)."""
    by_protocol: dict[str, AnswerClasses] = {}
    """The same answers by protocol and status class (a replica without it sends none)."""
    latency: LatencyHistogram = LatencyHistogram()
    """End-to-end latency of the answered requests."""
    comparisons: CopyComparisons = CopyComparisons()
    predictions: PredictionHistogram | None = None
    """None when the version's model.json has no prediction reference to bin on."""

    def merge(self, other: WindowSummary) -> WindowSummary:
        if (self.model, self.version) != (other.model, other.version):
            raise ValueError(
                f"summaries of {self.model!r} v{self.version} and {other.model!r} v{other.version} do not merge"
            )
        predictions = self.predictions
        if other.predictions is not None:
            predictions = other.predictions if predictions is None else predictions.merge(other.predictions)
        return WindowSummary(
            model=self.model,
            version=self.version,
            since=min(self.since, other.since),
            until=max(self.until, other.until),
            loads=tuple(dict.fromkeys((*self.loads, *other.loads))),
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            by_protocol=_merge_classes(self.by_protocol, other.by_protocol),
            latency=self.latency.merge(other.latency),
            comparisons=self.comparisons.merge(other.comparisons),
            predictions=predictions,
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, doc: Any) -> Self:
        """Raises pydantic's ValidationError (a ValueError) on a document of another shape."""
        return cls.model_validate(doc)


class Comparison(_Summary):
    """A candidate version and its baseline over the same window."""

    since: float
    until: float
    candidate: WindowSummary
    baseline: WindowSummary | None
    """None when the model has no baseline (nothing serves its unpinned requests)."""


CLIENT_ERROR_Z = 3.09
"""One-sided 99.9%: the candidate's 4xx on a protocol beyond production's share there by more than
this many standard deviations of sampling noise count as its errors. High because the gates look
at a growing window every tick: a release's looks must rarely count a noise excess, and a
candidate refusing a route exceeds it by far (the allowance is a few sqrt(n), the excess ~n)."""


def candidate_errors(candidate: WindowSummary, baseline: WindowSummary) -> tuple[int, int]:
    """The candidate's errors and answers over a window, against production's over the same one.

    An error is an answer production would not have given to the same kind of request: every
    5xx, and on each protocol (`v1`, `v2`, `grpc`: the route) the 4xx beyond the share of 4xx
    production answered there. A client's malformed request is refused by both versions alike,
    so it shows in both shares and is not counted; a candidate that refuses what production
    answers (a v1 record it has no feature spec for) shows 4xx production does not have.

    On a protocol where the candidate answered n requests, c of them 4xx, and production N,
    b of them 4xx, production's share is q = (b + 1/2) / (N + 1) (Jeffreys-smoothed) and the
    excess is floor(c - n q - z sqrt(n p (1 - p) (1 + n / N))), at least 0, with z =
    `CLIENT_ERROR_Z` and p the pooled share (c + b + 1/2) / (n + N + 1): under one common 4xx
    share, c - n q has that variance (the candidate's binomial noise plus that of production's
    share scaled to n; pooled, as a two-proportion test's, so a low draw of b does not shrink
    it). Two samples of one version add an error in about 1 look in 1,000 (one or two of them),
    whatever the share of malformed requests; a candidate refusing a whole route is counted
    nearly in full. A protocol production answered
    nothing on with 2xx in the window gives no excess (nothing to compare with). Shadow copies
    are judged on their failures instead (`gates.error_gate`).
    """
    errors = candidate.errors
    for protocol, answers in candidate.by_protocol.items():
        theirs = baseline.by_protocol.get(protocol)
        if not answers.client_errors or theirs is None or not theirs.ok:
            continue
        n, total = answers.total, theirs.total
        share = (theirs.client_errors + 0.5) / (total + 1)
        pooled = (answers.client_errors + theirs.client_errors + 0.5) / (n + total + 1)
        noise = CLIENT_ERROR_Z * math.sqrt(n * pooled * (1 - pooled) * (1 + n / total))
        errors += max(0, math.floor(answers.client_errors - n * share - noise))
    return errors, candidate.requests


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus' `histogram_quantile` over cumulative bucket counts (upper bound -> count)."""
    if not cumulative:
        return None
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the +Inf bucket: the largest finite bound, as Prometheus does
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _add(left: tuple[int, ...], right: tuple[int, ...]) -> tuple[int, ...]:
    if len(left) != len(right):
        raise ValueError(f"histograms of {len(left)} and {len(right)} buckets do not merge")
    return tuple(a + b for a, b in zip(left, right, strict=True))


def _merge_classes(left: dict[str, AnswerClasses], right: dict[str, AnswerClasses]) -> dict[str, AnswerClasses]:
    out = dict(left)
    for protocol, answers in right.items():
        mine = out.get(protocol)
        out[protocol] = answers if mine is None else mine.merge(answers)
    return out

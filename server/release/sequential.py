"""Anytime-valid confidence bounds for the release gates (control path; closed forms, no SciPy).

A release re-judges its gates on every tick, so a bound that holds at one fixed sample size (a
Wilson interval, a chi-square quantile) is crossed by chance far more often than its level says
once it is looked at again and again. Every bound here is a *confidence sequence*: it holds at
every sample size at once, with probability at least 1 - alpha, however often it is looked at.

The construction is the conjugate-mixture one of Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences" (Ann. Statist. 49(2), 2021,
section 3.2 and Proposition 3; the beta-binomial mixture is their eq. (3.10) family for
Bernoulli observations): for i.i.d. Bernoulli(p) draws with S successes in n, the mixture of
likelihood ratios over a Beta(a, b) prior

    M_n(p) = B(a + S, b + n - S) / B(a, b) / (p^S (1 - p)^(n - S))

is a nonnegative martingale with mean 1 at the true p, so by Ville's inequality
P(exists n: M_n(p) >= 1/alpha) <= alpha, and {p : M_n(p) < 1/alpha} is a confidence sequence.
log M_n is convex in p (and in S), so each bound is found by bisection.

Quantiles (Howard and Ramdas, "Sequential estimation of quantiles with applications to A/B-testing
and best-arm identification", Bernoulli 28(3), 2022, Theorem 1): the indicators 1{X_i <= q_p}
of the true p-quantile are Bernoulli(p) (continuous X), so the counts S the mixture accepts at p
are an interval [lo, hi] for every n at once, and the order statistics X_(lo) and X_(hi + 1)
bound q_p at every n. Latency evidence is a histogram, so an order statistic is only known to
lie in its bucket: the lower bound takes the bucket's lower edge, the upper bound its upper
edge (conservative; the finer the buckets, the less it costs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

JEFFREYS = (0.5, 0.5)
"""The mixing prior for error rates, agreement and prediction shares: mass near 0 and 1, where
those proportions live, so the bound is tight for a few errors in thousands or for near-total
agreement."""
QUANTILE_PRIOR_WEIGHT = 400.0
"""The mixing prior for a quantile's count is Beta(p w, (1 - p) w): centred on p with the spread
of ~w draws, so that it weighs the deviations a few thousand samples can resolve (at p = 0.99 a
prior standard deviation of 0.005); Howard et al. 2021 (section 3.5) tune the mixture the same way."""
_BISECTIONS = 60


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_mixture(successes: float, trials: int, p: float, prior: tuple[float, float]) -> float:
    """log M_n(p) of the beta-binomial mixture (Howard et al. 2021); +inf at an impossible p."""
    a, b = prior
    failures = trials - successes
    if (p <= 0.0 and successes > 0) or (p >= 1.0 and failures > 0):
        return math.inf
    log_likelihood = (successes * math.log(p) if successes else 0.0) + (failures * math.log1p(-p) if failures else 0.0)
    return _log_beta(a + successes, b + failures) - _log_beta(a, b) - log_likelihood


def proportion_bounds(
    successes: int, trials: int, alpha: float, prior: tuple[float, float] = JEFFREYS
) -> tuple[float, float]:
    """The confidence sequence for a Bernoulli proportion at `trials` draws: (lower, upper), which
    hold at every number of trials at once with probability >= 1 - alpha; (0, 1) with no trials."""
    if trials == 0:
        return 0.0, 1.0
    threshold = math.log(1.0 / alpha)
    estimate = successes / trials

    def outside(p: float) -> bool:
        return _log_mixture(successes, trials, p, prior) >= threshold

    lower = 0.0
    if successes > 0 and outside(0.0):
        lo, hi = 0.0, estimate  # outside at lo, inside at hi (log M is convex, smallest near the estimate)
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if outside(mid) else (lo, mid)
        lower = lo
    upper = 1.0
    if successes < trials and outside(1.0):
        lo, hi = estimate, 1.0
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if outside(mid) else (mid, hi)
        upper = hi
    return lower, upper


def count_bounds(trials: int, p: float, alpha: float) -> tuple[int, int]:
    """The counts of draws at or below the true p-quantile that the quantile confidence sequence
    accepts at `trials` draws (Howard and Ramdas 2022): (lo, hi), with lo >= 0 and hi <= trials."""
    weight = QUANTILE_PRIOR_WEIGHT
    prior = (p * weight, (1.0 - p) * weight)
    threshold = math.log(1.0 / alpha)

    def inside(count: int) -> bool:
        return _log_mixture(count, trials, p, prior) < threshold

    centre = min(max(round(p * trials), 0), trials)
    if not inside(centre):  # never at alpha < 1: the mixture of ratios to the best fit is at most 1
        return 0, trials
    lo, hi = 0, centre  # smallest count inside: inside at hi
    if inside(0):
        lo_count = 0
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if inside(mid) else (mid, hi)
        lo_count = hi
    lo, hi = centre, trials  # largest count inside: inside at lo
    if inside(trials):
        hi_count = trials
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if inside(mid) else (lo, mid)
        hi_count = lo
    return lo_count, hi_count


def quantile_bounds(counts: Sequence[int], bounds: Sequence[float], p: float, alpha: float) -> tuple[float, float]:
    """Anytime-valid (lower, upper) bounds on the p-quantile of the distribution a histogram was
    drawn from (`counts[i]` values in (bounds[i - 1], bounds[i]], the last count above the last
    bound): the bucket edges around the order statistics X_(lo) and X_(hi + 1) of
    `count_bounds`. The lower bound is 0 while there is too little evidence, the upper +inf."""
    total = sum(counts)
    if total == 0:
        return 0.0, math.inf
    lo, hi = count_bounds(total, p, alpha)
    edges = (0.0, *bounds, math.inf)  # bucket i spans (edges[i], edges[i + 1]]
    lower, upper = 0.0, math.inf
    cumulative = 0
    for index, count in enumerate(counts):
        before = cumulative
        cumulative += count
        if lo >= 1 and before < lo <= cumulative:
            lower = edges[index]
        if hi + 1 <= total and before < hi + 1 <= cumulative:
            upper = edges[index + 1]
    return lower, upper

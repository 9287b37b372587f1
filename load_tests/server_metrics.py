"""The server's own view of a run: its request-latency histogram (`hotserve_request_duration_seconds`)
scraped before and after, so the report can put the server's p50/p99 beside the client's and
show how much of the client's latency the server spent (the rest is the network stack and the
load generator sharing the machine).
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from server.evidence.summary import histogram_quantile

Buckets = dict[str, dict[float, float]]
"""protocol -> cumulative count per bucket upper bound."""


def latency_buckets(host: str, model: str) -> Buckets:
    """The server's cumulative request-latency buckets for `model`, summed over versions, per protocol."""
    with urllib.request.urlopen(f"{host}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: Buckets = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        if family.name != "hotserve_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("model") == model:
                buckets[sample.labels["protocol"]][float(sample.labels["le"])] += sample.value
    return {protocol: dict(counts) for protocol, counts in buckets.items()}


def server_latency(before: Buckets, after: Buckets) -> dict[str, dict[str, float | None]]:
    """Per protocol: requests, p50 and p99 (ms) of what the server answered between the scrapes,
    interpolated within buckets as Prometheus' `histogram_quantile` does."""
    out: dict[str, dict[str, float | None]] = {}
    for protocol, counts in sorted(after.items()):
        earlier = before.get(protocol, {})
        delta = {le: count - earlier.get(le, 0.0) for le, count in counts.items()}
        p50, p99 = histogram_quantile(0.5, delta), histogram_quantile(0.99, delta)
        out[protocol] = {
            "requests": max(delta.values(), default=0.0),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }
    return out

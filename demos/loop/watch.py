"""What the demo watches: live quality per version from the admin API, the label-free estimate,
and the quality alert's condition evaluated on /metrics exactly as its Prometheus rule does.

HotserveQualityBelowTraining (helm/hotserve/rules/hotserve.yaml): the training figure minus the
live one above `ALERT_MARGIN` on at least `ALERT_MIN_LABELS` labelled rows of the quality span;
Prometheus also wants it for 10 minutes, the demo for `hold` consecutive looks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ALERT_MARGIN = 0.05
ALERT_MIN_LABELS = 500
METRIC = "auc"


@dataclass(frozen=True)
class Look:
    """One look at a version: its live figure over the quality span, the estimate, the reference."""

    at: float
    version: str
    live: float | None
    labels: int
    estimate: float | None
    reference: float | None

    @property
    def below_training(self) -> bool:
        """The alert rule's condition on this look."""
        if self.live is None or self.reference is None or self.labels < ALERT_MIN_LABELS:
            return False
        return self.reference - self.live > ALERT_MARGIN


def _gauges(text: str) -> dict[tuple[str, str, str], float]:
    """(name, version, metric) -> value of the fraud model's quality gauges."""
    values: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("hotserve_quality"):
            continue
        for sample in family.samples:
            if sample.labels.get("model") == "fraud":
                key = (sample.name, sample.labels.get("version", ""), sample.labels.get("metric", ""))
                values[key] = sample.value
    return values


@dataclass
class Watch:
    """Looks at one server's quality figures; keeps every look for the plot."""

    url: str
    token: str
    looks: list[Look] = field(default_factory=list)

    def look(self, client: httpx.Client) -> list[Look]:
        """The quality gauges of every version now (the alert reads these very series)."""
        gauges = _gauges(client.get(f"{self.url}/metrics").text)
        now = time.time()
        versions = sorted({v for (_, v, _) in gauges if v}, key=int)
        looks = [
            Look(
                at=now,
                version=v,
                live=gauges.get(("hotserve_quality", v, METRIC)),
                labels=int(gauges.get(("hotserve_quality_labels", v, ""), 0)),
                estimate=gauges.get(("hotserve_quality_estimate", v, METRIC)),
                reference=gauges.get(("hotserve_quality_reference", v, METRIC)),
            )
            for v in versions
        ]
        self.looks.extend(looks)
        return looks

    def windows(self, client: httpx.Client, since: float) -> list[tuple[str, float, float, float, int]]:
        """(version, window start, end, live AUC, labels) of every window with a figure, since `since`."""
        report: dict[str, Any] = client.get(
            f"{self.url}/admin/models/fraud/quality",
            params={"since": since},
            headers={"Authorization": f"Bearer {self.token}"},
        ).json()
        found = []
        for version in report.get("versions", []):
            for window in version["windows"]:
                value = window["metrics"].get(METRIC)
                if value is not None:
                    found.append((str(version["version"]), window["since"], window["until"], value, window["labels"]))
        return found

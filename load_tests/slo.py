"""The SLO gate: targets from a YAML (or JSON) file, checked against a run's summary.

Each target becomes one verdict naming what was measured, so a failed gate says which SLO
failed and by how much. `python -m load_tests run --slo FILE` gates the run it made;
`python -m load_tests check SUMMARY --slo FILE` gates a stored summary again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat


class SloFile(BaseModel):
    """What a run must show. Every field is optional: an absent target is not checked."""

    model_config = ConfigDict(extra="forbid")

    p99_ms: dict[str, PositiveFloat] = Field(default_factory=dict)
    """Per scenario (request name: v2_json, v2_binary, v1_features, ...): the run's p99, ms."""
    max_error_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    """Failed requests (wrong status or answer, connection errors) over all requests."""
    min_throughput_rps: PositiveFloat | None = None
    """Prediction requests answered per second over the run."""
    zero_failures_during_promotions: bool = False
    """No prediction request fails while production changes hands (promote, rollback)."""
    promotion_window_s: float = Field(default=2.0, ge=0.0)
    """How long after a promote/rollback call answered its window still lasts."""

    @classmethod
    def read(cls, path: Path) -> SloFile:
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})


@dataclass(frozen=True)
class Verdict:
    slo: str
    target: str
    measured: str
    passed: bool

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.slo}: measured {self.measured}, target {self.target}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(slo: SloFile, summary: dict[str, Any]) -> list[Verdict]:
    """One verdict per target in `slo`, from a run summary (`report.summary`)."""
    verdicts = []
    scenarios = summary["scenarios"]
    for scenario, target in slo.p99_ms.items():
        p99 = scenarios.get(scenario, {}).get("p99_ms")
        verdicts.append(
            Verdict(
                f"p99 {scenario}",
                f"<= {target:g} ms",
                "no requests" if p99 is None else f"{p99:g} ms",
                p99 is not None and p99 <= target,
            )
        )
    total = summary["total"]
    if slo.max_error_ratio is not None:
        ratio = total["error_ratio"]
        verdicts.append(
            Verdict(
                "error ratio",
                f"<= {slo.max_error_ratio:g}",
                f"{ratio:.4g} ({total['failures']} of {total['requests']} requests)",
                ratio <= slo.max_error_ratio,
            )
        )
    if slo.min_throughput_rps is not None:
        rps = total["prediction_requests_per_s"]
        verdicts.append(
            Verdict(
                "throughput", f">= {slo.min_throughput_rps:g} req/s", f"{rps:.1f} req/s", rps >= slo.min_throughput_rps
            )
        )
    if slo.zero_failures_during_promotions:
        promotions = summary["promotions"]
        changes = len(promotions["windows"])
        measured = (
            f"{promotions['failures']} failed of {promotions['requests']} requests in {changes} production changes"
            if changes
            else "no production change happened during the run"
        )
        verdicts.append(
            Verdict(
                "zero failures during promotions",
                "0 failed, at least one promotion",
                measured,
                changes > 0 and promotions["failures"] == 0,
            )
        )
    return verdicts


def gate(verdicts: list[Verdict]) -> int:
    """Print the verdicts; 0 if all passed, 1 otherwise (with each failed SLO named again)."""
    for verdict in verdicts:
        print(f"  {verdict}")
    failed = [v for v in verdicts if not v.passed]
    if failed:
        print(
            f"SLO gate: {len(failed)} of {len(verdicts)} failed: "
            + "; ".join(f"{v.slo} = {v.measured} (target {v.target})" for v in failed)
        )
        return 1
    print(f"SLO gate: all {len(verdicts)} passed")
    return 0

"""The SLO gate: targets from a YAML (or JSON) file, checked against a run's summary.

Each target becomes one verdict naming what was measured, so a failed gate says which SLO
failed and by how much. `python -m load_tests run --slo FILE` gates the run it made;
`python -m load_tests check SUMMARY --slo FILE` gates a stored summary again.

A target the run's own settings cannot reach is said so, from the settings in the summary: a
throughput floor above what the users offer (users x their paced rate) is scaled to the run's
offered rate when the file says which rate the floor was set for (`offered_rps`), and fails
with that reason otherwise; the promotion SLO is skipped, said why, when the run had no
operator or ended before the operator's first promotion could come.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError


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
    offered_rps: PositiveFloat | None = None
    """The offered rate `min_throughput_rps` was set for; a run offering less is held to the floor
    scaled by its share of this rate. Unset: the floor applies as written."""

    @classmethod
    def read(cls, path: Path) -> SloFile:
        """The file at `path`; SloFileError (one line: the file and what is wrong) otherwise."""
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SloFileError(f"SLO file {path}: cannot read it ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise SloFileError(f"SLO file {path}: not YAML{line} ({getattr(exc, 'problem', None) or exc})") from None
        if doc is not None and not isinstance(doc, dict):
            raise SloFileError(f"SLO file {path}: expected a mapping of targets, got {type(doc).__name__}")
        try:
            return cls.model_validate(doc or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise SloFileError(f"SLO file {path}: {problems}") from None


EXIT_SLO_FILE = 3
"""Exit status of a run or check whose SLO file is missing or invalid (1: an SLO failed)."""


class SloFileError(ValueError):
    """An SLO file that is missing, unreadable or invalid; the message is the one line to print."""


RUN_PROMOTES_AFTER_INTERVALS = 4
"""The operator's first promotion comes after this many of its intervals (`load_tests/operator.py`:
wait, load, wait, canary and split, wait, shadow, wait, promote)."""


@dataclass(frozen=True)
class Verdict:
    slo: str
    target: str
    measured: str
    passed: bool
    note: str | None = None
    """Why the target is out of this run's reach, and what was done about it."""
    skipped: bool = False

    def __str__(self) -> str:
        word = "SKIP" if self.skipped else "PASS" if self.passed else "FAIL"
        return f"{word} {self.slo}: measured {self.measured}, target {self.target}" + (
            f" ({self.note})" if self.note else ""
        )

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
    settings = summary.get("settings") or {}
    if slo.min_throughput_rps is not None:
        verdicts.append(_throughput(slo, total["prediction_requests_per_s"], settings))
    if slo.zero_failures_during_promotions:
        verdicts.append(_promotions(summary["promotions"], settings))
    return verdicts


def offered_rps(settings: dict[str, Any]) -> tuple[float, str] | None:
    """The most prediction requests per second the run's users send, and how it follows from its
    settings; None when unbounded (no pacing) or not recorded."""
    users, rate = settings.get("users"), settings.get("rate_per_user")
    if not users or not rate:
        return None
    senders = users - (1 if settings.get("operator") else 0)
    return senders * rate, f"{senders} prediction users x {rate:g} req/s"


def _throughput(slo: SloFile, rps: float, settings: dict[str, Any]) -> Verdict:
    floor = slo.min_throughput_rps
    assert floor is not None
    offered = offered_rps(settings)
    note = None
    if offered is not None and offered[0] < floor:
        if slo.offered_rps is not None and offered[0] < slo.offered_rps:
            scaled = floor * offered[0] / slo.offered_rps
            note = (
                f"{floor:g} req/s scaled to this run: it offers {offered[0]:g} req/s ({offered[1]}), "
                f"the floor was set for {slo.offered_rps:g}"
            )
            floor = scaled
        else:
            note = (
                f"unreachable with this run's settings: it offers at most {offered[0]:g} req/s ({offered[1]}); "
                f"raise --users or --rate-per-user, or lower min_throughput_rps"
            )
    target = f"{floor:.1f}".removesuffix(".0")
    return Verdict("throughput", f">= {target} req/s", f"{rps:.1f} req/s", rps >= floor, note)


def _promotions(promotions: dict[str, Any], settings: dict[str, Any]) -> Verdict:
    name, target = "zero failures during promotions", "0 failed, at least one promotion"
    changes = len(promotions["windows"])
    if changes:
        measured = (
            f"{promotions['failures']} failed of {promotions['requests']} requests in {changes} production changes"
        )
        return Verdict(name, target, measured, promotions["failures"] == 0)
    measured = "no production change happened during the run"
    if settings.get("operator") is False:
        return Verdict(name, target, measured, True, "skipped: the run had no operator (--no-operator)", skipped=True)
    interval, duration = settings.get("operator_interval_s"), settings.get("duration_s")
    if interval and duration and duration < RUN_PROMOTES_AFTER_INTERVALS * interval:
        note = (
            f"skipped: the operator's first promotion comes after {RUN_PROMOTES_AFTER_INTERVALS} x "
            f"{interval:g} s (--operator-interval), after this {duration:g} s run ended; run longer than "
            f"{RUN_PROMOTES_AFTER_INTERVALS * interval:g} s or shorten the interval"
        )
        return Verdict(name, target, measured, True, note, skipped=True)
    return Verdict(name, target, measured, False)


def gate(verdicts: list[Verdict]) -> int:
    """Print the verdicts; 0 if all passed, 1 otherwise (with each failed SLO named again)."""
    for verdict in verdicts:
        print(f"  {verdict}")
    failed = [v for v in verdicts if not v.passed]
    skipped = sum(v.skipped for v in verdicts)
    if failed:
        print(
            f"SLO gate: {len(failed)} of {len(verdicts)} failed: "
            + "; ".join(f"{v.slo} = {v.measured} (target {v.target})" for v in failed)
        )
        return 1
    if skipped:
        print(
            f"SLO gate: {len(verdicts) - skipped} of {len(verdicts)} passed, {skipped} skipped (out of this run's reach)"
        )
    else:
        print(f"SLO gate: all {len(verdicts)} passed")
    return 0

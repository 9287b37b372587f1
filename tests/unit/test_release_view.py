"""`hotserve release --wait`'s output: a line per change off a terminal (or JSON lines), one view
redrawn in place on a terminal (rich, recorded), the observed figure beside its confidence bound,
and a last line naming production."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from rich.console import Console

from server.api.admin import release_view
from server.evidence.summary import CopyComparisons, LatencyHistogram, WindowSummary
from server.release.gates import Decision, GateResult, Verdict, agreement_gate, error_gate
from server.release.policy import GateBounds, ReleasePolicy
from server.release.record import ReleaseRecord, Step, StepResult
from server.release_cli import EXIT_CODES, follow, progress
from server.release_view import LineDisplay, LiveDisplay

STARTED = 1_800_000_000.0
POLICY = ReleasePolicy()  # the default schedule: shadow, canary 5, 25, 50; 300 s bakes


def gate(name: str, verdict: Verdict, measured: float, bound: float, observed: float, samples: int) -> GateResult:
    return GateResult(
        gate=name, measured=measured, bound=bound, observed=observed, samples=samples, verdict=verdict, detail="..."
    )


def doc(step: int, verdicts: tuple[Verdict, Verdict] | None, state: str = "running", **update: Any) -> dict[str, Any]:
    """The admin API's view of a release of fraud v4 against production v2."""
    decision = None
    if verdicts is not None:
        decision = Decision(
            verdict=Verdict.INCONCLUSIVE,
            gates=(
                gate("error_rate", verdicts[0], 0.0005, 0.0071, 0.002, 120),
                gate("agreement", verdicts[1], 0.991, 0.99, 0.996, 1500),
            ),
        )
    record = ReleaseRecord(
        id="r1",
        model="fraud",
        version=4,
        baseline=2,
        policy=POLICY,
        created_by="alice",
        created_at=STARTED,
        state=state,  # type: ignore[arg-type]
        step=step,
        step_started_at=None if verdicts is None else STARTED + 10,
        last_decision=decision,
        **update,
    )
    return release_view(record)


def test_gates_report_the_observed_share_beside_the_confidence_bound_they_judge() -> None:
    empty = LatencyHistogram()
    candidate = WindowSummary(
        model="fraud",
        version=4,
        since=0,
        until=60,
        requests=1000,
        errors=5,
        latency=empty,
        comparisons=CopyComparisons(compared=1000, agreed=996),
    )
    baseline = candidate.model_copy(update={"version": 2, "errors": 4})
    errors = error_gate(candidate, baseline, GateBounds())
    agreement = agreement_gate(candidate, GateBounds())
    assert errors.observed == 5 / 1000 and errors.measured is not None and errors.measured < 5 / 1000
    assert agreement.observed == 996 / 1000 and agreement.measured is not None and agreement.measured < 0.996
    line = progress(doc(1, (Verdict.PASS, Verdict.INCONCLUSIVE)))
    assert "error_rate  pass         measured 0.20% (lower bound 0.05%) bound 0.71% n=120" in line
    assert "agreement   inconclusive measured 99.60% (lower bound 99.10%) bound 99.00% n=1500" in line


def test_off_a_terminal_one_line_per_change_and_the_last_names_the_new_production() -> None:
    running = doc(0, (Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE))
    docs = [
        running,
        running,  # the same verdicts a poll later: no line
        doc(0, (Verdict.PASS, Verdict.INCONCLUSIVE)),
        doc(0, (Verdict.PASS, Verdict.PASS)),
        doc(1, None),
        doc(
            4,
            None,
            state="promoted",
            history=(StepResult(step=Step(kind="shadow"), started_at=STARTED, ended_at=STARTED + 300, decision=None),),
        ),
    ]
    out = io.StringIO()
    reads = iter(docs[1:])
    code = follow(lambda: next(reads), docs[0], 1.0, LineDisplay(out, now=lambda: STARTED + 82), sleep=lambda _: None)
    lines = out.getvalue().splitlines()
    assert code == EXIT_CODES["promoted"] == 0
    changes = [line for line in lines if "release r1: fraud v4 against production v2" in line]
    assert len(changes) == 5, lines
    assert (
        "shadow (1/4), 1:12 of 5:00 baked; error_rate inconclusive 0.20% (lower bound 0.05%) <= 0.71% n=120/200"
        in (changes[0])
    )
    assert "agreement inconclusive 99.60% (lower bound 99.10%) >= 99.00% n=1500" in changes[0]
    assert "shadow (1/4), 1:12 of 5:00 baked; error_rate pass" in changes[1]
    assert "canary 5% (2/4), routing being applied" in changes[3]
    assert changes[4].endswith(": promoted")
    assert lines[-1] == "promoted: fraud production is now v4 (was v2)"


def test_a_rollback_ends_saying_production_is_unchanged() -> None:
    out = io.StringIO()
    final = doc(1, (Verdict.FAIL, Verdict.PASS), state="rolled_back", detail="error_rate failed in canary 5%")
    code = follow(lambda: final, doc(1, None), 1.0, LineDisplay(out), sleep=lambda _: None)
    assert code == 1
    assert out.getvalue().splitlines()[-1] == (
        "rolled back (error_rate failed in canary 5%): fraud production is still v2; v4 was not promoted"
    )


def test_json_lines_are_one_document_per_change() -> None:
    out = io.StringIO()
    docs = [doc(1, (Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE))] * 3 + [doc(4, None, state="promoted")]
    reads = iter(docs[1:])
    follow(lambda: next(reads), docs[0], 1.0, LineDisplay(out, json_lines=True), sleep=lambda _: None)
    parsed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["state"], d["step"]) for d in parsed] == [("running", 1), ("promoted", 4)]


def test_on_a_terminal_one_view_is_redrawn_in_place() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=110, record=True, color_system=None)
    display = LiveDisplay(console, now=lambda: STARTED + 82)
    docs = [doc(1, (Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE)), doc(1, (Verdict.PASS, Verdict.INCONCLUSIVE))]
    reads = iter([*docs[1:], doc(4, None, state="promoted")])
    code = follow(lambda: next(reads), docs[0], 1.0, display, sleep=lambda _: None)
    assert code == 0
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[" in raw and "\x1b[2K" in raw  # cursor movement: the view is erased and redrawn, not scrolled
    assert raw.count("step 2/4: canary 5%") >= 2  # drawn once per poll
    shown = console.export_text()
    assert "1:12 / 5:00 bake" in shown
    assert "24% to the next step" in shown  # the bake (1:12 of 5:00) is further from done than the samples (120/200)
    assert re.search(r"error_rate +inconclusive +0\.20% \(lower bound 0\.05%\) +<= +0\.71% +120/200", shown)
    assert re.search(r"agreement +inconclusive +99\.60% \(lower bound 99\.10%\) +>= +99\.00% +1500", shown)
    assert shown.rstrip().splitlines()[-1] == "promoted: fraud production is now v4 (was v2)"

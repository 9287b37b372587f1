"""What `hotserve release --wait` shows while a release runs (client side).

On a terminal: one view redrawn in place (rich's `Live`): the step and its place in the
schedule, the time in the step against its bake time, a bar toward the next step (the bake time
and the samples the gates need, whichever is further), and each gate's observed figure beside
the confidence bound its verdict compares with the gate's bound. Elsewhere (a pipe, a CI log):
one line per change of state, step or a gate's verdict. The last line names production.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

REQUIRED_SAMPLES = {"error_rate": "min_requests", "psi": "min_requests", "p99_ratio": "min_latency_samples"}
"""Gate -> the policy's `gates` field saying how many samples it needs before it can pass."""
AT_LEAST = frozenset({"agreement"})
"""Gates that pass when their figure reaches the bound; the others fail when theirs exceeds it."""
VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "not_judged": "dim"}


@dataclass(frozen=True, slots=True)
class GateRow:
    """One gate as shown: its figures formatted for its kind (shares as percentages, ratios as x)."""

    gate: str
    verdict: str
    measured: str
    """The observed figure with the confidence bound the verdict compares (`0.20% (lower bound 0.05%)`)."""
    relation: str
    """`<=` or `>=`: what passing needs of that confidence bound against `bound`."""
    bound: str
    samples: str
    """`120/200` where the gate needs a number of samples to pass, else the count."""


@dataclass(frozen=True, slots=True)
class StepProgress:
    label: str
    index: int
    """1-based place in the schedule."""
    count: int
    elapsed_s: float | None
    """Time in the step; None until its routing is applied."""
    bake_s: float
    fraction: float
    """Toward the next step: the smaller of the bake time's share elapsed and each gate's samples' share."""


def figure(gate: str, value: float | None) -> str:
    if value is None:
        return "-"
    if gate in ("error_rate", "agreement"):
        return f"{value:.2%}"
    if gate == "p99_ratio":
        return f"{value:.2f}x"
    return f"{value:.4g}"


def gate_rows(doc: dict[str, Any]) -> list[GateRow]:
    decision = doc.get("last_decision")
    gates_policy = (doc.get("policy") or {}).get("gates") or {}
    rows = []
    for gate in [] if decision is None else decision["gates"]:
        name = gate["gate"]
        measured = figure(name, gate["measured"])
        if gate.get("observed") is not None:
            measured = f"{figure(name, gate['observed'])} (lower bound {measured})"
        needed = gates_policy.get(REQUIRED_SAMPLES.get(name, ""))
        rows.append(
            GateRow(
                gate=name,
                verdict=gate["verdict"],
                measured=measured,
                relation=">=" if name in AT_LEAST else "<=",
                bound=figure(name, gate["bound"]),
                samples=f"{gate['samples']}/{needed}" if needed else str(gate["samples"]),
            )
        )
    return rows


def step_progress(doc: dict[str, Any], now: float) -> StepProgress | None:
    """Where the running release stands in its current step; None once it is finished."""
    schedule = doc.get("schedule") or []
    if doc["state"] != "running" or doc["step"] >= len(schedule):
        return None
    policy = doc["policy"]
    label = schedule[doc["step"]]
    bake_s = float(policy["shadow_bake_s"] if doc["step"] == 0 else policy["canary_bake_s"])
    started = doc.get("step_started_at")
    elapsed = None if started is None else max(0.0, now - started)
    shares = [1.0 if bake_s <= 0 else min(1.0, (elapsed or 0.0) / bake_s)]
    gates_policy = policy.get("gates") or {}
    for gate in (doc.get("last_decision") or {}).get("gates") or ():
        needed = gates_policy.get(REQUIRED_SAMPLES.get(gate["gate"], ""))
        if needed:
            shares.append(min(1.0, gate["samples"] / needed))
    return StepProgress(label, doc["step"] + 1, len(schedule), elapsed, bake_s, min(shares))


def clock(seconds: float | None) -> str:
    """`4:05`, or `-` before the step started."""
    if seconds is None:
        return "-"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def headline(doc: dict[str, Any]) -> str:
    return f"release {doc['id']}: {doc['model']} v{doc['version']} against production v{doc['baseline']}"


def change_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What a new line is printed for: the state, the step, and each gate's verdict."""
    verdicts = tuple((g["gate"], g["verdict"]) for g in (doc.get("last_decision") or {}).get("gates") or ())
    return doc["state"], doc["step"], doc.get("step_started_at") is not None, verdicts


def change_line(doc: dict[str, Any], now: float) -> str:
    """One line: the time, the state or step with its bake progress, and every gate's figures."""
    at = time.strftime("%H:%M:%S", time.localtime(now))
    step = step_progress(doc, now)
    if step is None:
        where = doc["state"]
    elif step.elapsed_s is None:
        where = f"{step.label} ({step.index}/{step.count}), routing being applied"
    else:
        where = f"{step.label} ({step.index}/{step.count}), {clock(step.elapsed_s)} of {clock(step.bake_s)} baked"
    gates = "; ".join(f"{r.gate} {r.verdict} {r.measured} {r.relation} {r.bound} n={r.samples}" for r in gate_rows(doc))
    return f"{at} {headline(doc)}: {where}" + (f"; {gates}" if gates else "")


def final_line(doc: dict[str, Any]) -> str:
    """The verdict and which version production names now."""
    model, version, baseline = doc["model"], doc["version"], doc["baseline"]
    state = doc["state"]
    if state == "promoted":
        return f"promoted: {model} production is now v{version} (was v{baseline})"
    why = f" ({doc['detail']})" if doc.get("detail") else ""
    words = {"rolled_back": "rolled back", "aborted": "aborted", "inconclusive": "inconclusive"}.get(state, state)
    return f"{words}{why}: {model} production is still v{baseline}; v{version} was not promoted"


def live_view(doc: dict[str, Any], now: float) -> RenderableType:
    """The terminal view of a release: headline, step with its bar, the gates' table."""
    parts: list[RenderableType] = [Text(headline(doc), style="bold")]
    step = step_progress(doc, now)
    if step is not None:
        line = Text(f"step {step.index}/{step.count}: {step.label}   ")
        line.append(f"{clock(step.elapsed_s)} / {clock(step.bake_s)} bake", style="cyan")
        parts.append(line)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=1.0, completed=step.fraction, width=40), f"{step.fraction:.0%} to the next step")
        parts.append(bar)
    else:
        parts.append(Text(f"state: {doc['state']}"))
    if doc.get("detail"):
        parts.append(Text(doc["detail"], style="dim"))
    rows = gate_rows(doc)
    if rows:
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("GATE", "VERDICT", "MEASURED", "", "BOUND", "SAMPLES"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r.gate,
                Text(r.verdict, style=VERDICT_STYLE.get(r.verdict, "")),
                r.measured,
                r.relation,
                r.bound,
                r.samples,
            )
        parts.append(table)
    elif step is not None:
        parts.append(Text("no decision yet: the gates are judged once the step's routing is applied", style="dim"))
    return Group(*parts)


class LineDisplay:
    """Not a terminal: a line per change (`change_key`), or with `json_lines` the server's document
    per change, one JSON object a line; at the end the whole state and the line naming production."""

    def __init__(self, out: TextIO, json_lines: bool = False, now: Callable[[], float] = time.time) -> None:
        self._out = out
        self._json = json_lines
        self._now = now
        self._shown: tuple[Any, ...] | None = None

    def show(self, doc: dict[str, Any]) -> None:
        key = change_key(doc)
        if key == self._shown:
            return
        self._shown = key
        line = json.dumps(doc, separators=(",", ":")) if self._json else change_line(doc, self._now())
        print(line, file=self._out, flush=True)

    def close(self, doc: dict[str, Any], summary: str) -> None:
        self.show(doc)
        if not self._json:
            print(summary, final_line(doc), sep="\n", file=self._out, flush=True)


class LiveDisplay:
    """A terminal: one view redrawn in place on every poll; at the end the whole state and the
    line naming production, printed below it."""

    def __init__(self, console: Console, now: Callable[[], float] = time.time) -> None:
        self._console = console
        self._now = now
        self._live: Live | None = None

    def show(self, doc: dict[str, Any]) -> None:
        view = live_view(doc, self._now())
        if self._live is None:
            self._live = Live(view, console=self._console, auto_refresh=False, transient=True)
            self._live.start(refresh=True)
        else:
            self._live.update(view, refresh=True)

    def close(self, doc: dict[str, Any], summary: str) -> None:
        if self._live is not None:
            self._live.stop()
        self._console.print(summary, final_line(doc), sep="\n", highlight=False, markup=False)

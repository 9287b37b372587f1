"""`python -m load_tests capacity`: a step load per scenario that finds the highest request rate at
which it still meets its p99 SLO on this machine, for each model.

Each step offers a rate: `users` clients each pacing itself to `--rate-per-user` requests per
second. A step meets the SLO when its p99 is within the target, nothing failed and the server
answered at least 90% of the offered rate (a closed loop that falls behind is saturated even
if its p99 looks fine). Stepping stops at the first step that misses; the capacity is the
rate answered at the last step that met it. The generator's CPU per step is kept, so a
plateau caused by the generator rather than the server is named as such.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from load_tests import plots, report
from load_tests.locust_run import Phase, PhaseSpan, run_load
from load_tests.markdown import replace_section
from load_tests.recorder import Recorder
from load_tests.release_run import start_demo_server
from load_tests.scenarios import V1_FEATURES, prediction_users
from load_tests.server_metrics import latency_buckets, server_latency
from load_tests.slo import SloFile
from load_tests.target import Target, read_target

START, END = "<!-- loadtest-capacity:start -->", "<!-- loadtest-capacity:end -->"
SETTLE_S = 1.0
"""Each step's first second (users arriving, queues filling) is not measured."""
MIN_ANSWERED = 0.9
GENERATOR_BOUND_CORES = 0.85
"""A generator process this busy cannot offer more: a shortfall then is the generator's."""


@dataclass
class Step:
    users: int
    offered_rps: float
    achieved_rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    failures: int
    generator_cores: float
    server_p99_ms: float | None
    """The server's own p99 for the step (its histogram, interpolated within buckets)."""
    meets: bool
    missed: str
    """Why the step misses the SLO ('' when it meets it)."""


@dataclass
class Capacity:
    model: str
    scenario: str
    p99_target_ms: float
    steps: list[Step]

    @property
    def best(self) -> Step | None:
        meeting = [s for s in self.steps if s.meets]
        return max(meeting, key=lambda s: s.achieved_rps) if meeting else None

    @property
    def first_miss(self) -> Step | None:
        return next((s for s in self.steps if not s.meets), None)


def judge(
    users: int,
    offered: float,
    span: PhaseSpan,
    recorder: Recorder,
    names: list[str],
    target_ms: float,
    server_p99_ms: float | None,
) -> Step:
    window = recorder.window(names, span.settled + SETTLE_S, span.ended)
    seconds = span.ended - span.started
    cores = span.generator_cpu_s / seconds if seconds > 0 else 0.0
    missed = []
    if window.p99_ms is None or window.p99_ms > target_ms:
        missed.append(f"p99 {report._ms(window.p99_ms)} ms > {target_ms:g} ms")
    if window.failures:
        missed.append(f"{window.failures} failed")
    if window.requests_per_s < MIN_ANSWERED * offered:
        who = "generator-bound" if cores >= GENERATOR_BOUND_CORES else "server saturated"
        missed.append(
            f"answered {window.requests_per_s:.0f} of {offered:.0f} req/s offered ({who}, generator {cores:.2f} cores)"
        )
    return Step(
        users,
        offered,
        window.requests_per_s,
        window.p50_ms,
        window.p99_ms,
        window.requests,
        window.failures,
        round(cores, 2),
        server_p99_ms,
        not missed,
        "; ".join(missed),
    )


def step_scenario(
    target: Target, scenario: str, rates: list[float], rate_per_user: float, step_s: float, target_ms: float, out: Path
) -> Capacity:
    """Steps of rising offered rate until one misses the SLO."""
    recorder = Recorder()
    users = [max(1, math.ceil(rate / rate_per_user)) for rate in rates]
    phases = [Phase(2, 2, 2.0)] + [Phase(n, n, step_s) for n in users]  # first: warm-up, not judged
    result = Capacity(target.model, scenario, target_ms, [])
    protocol = "v1" if scenario == V1_FEATURES else "v2"
    scraped = [latency_buckets(target.host, target.model)]

    def keep_going(span: PhaseSpan) -> bool:
        scraped.append(latency_buckets(target.host, target.model))
        if span.phase is phases[0]:
            return True
        server = server_latency(scraped[-2], scraped[-1]).get(protocol, {})
        step = judge(
            span.phase.users,
            span.phase.users * rate_per_user,
            span,
            recorder,
            [scenario],
            target_ms,
            server.get("p99_ms"),
        )
        result.steps.append(step)
        print(
            f"   {scenario:10s} {step.users:4d} users  offered {step.offered_rps:6.0f}  answered "
            f"{step.achieved_rps:6.0f} req/s  p99 {report._ms(step.p99_ms):>7s} ms "
            f"(server {report._ms(step.server_p99_ms)} ms)  "
            f"{'meets' if step.meets else 'misses: ' + step.missed}",
            flush=True,
        )
        return step.meets

    run_load(
        target.host,
        prediction_users(target, {scenario: 1}, rate_per_user),
        phases,
        out / scenario,
        recorder=recorder,
        keep_going=keep_going,
    )
    return result


def capacity(args: argparse.Namespace) -> int:
    started = report.machine()
    rates = [float(r) for r in args.rates.split(",")]
    results: list[Capacity] = []
    for model in args.models.split(","):
        slo = SloFile.read(args.slo_dir / f"{model}.yaml")
        out = args.out / model
        model_args = argparse.Namespace(**{**vars(args), "model": model, "out": out})
        server = start_demo_server(model_args, "capacity-run-admin-token", 1)
        try:
            target = read_target(server.base_url, model, entities=args.entities, unknown_share=0.0)
            for scenario in args.scenarios.split(","):
                if scenario not in slo.p99_ms or (scenario == V1_FEATURES and not target.v1_known):
                    print(
                        f"   {model}: {scenario} skipped ({'no p99 target in its SLO file' if scenario not in slo.p99_ms else 'no feature view'})"
                    )
                    continue
                results.append(
                    step_scenario(target, scenario, rates, args.rate_per_user, args.step_s, slo.p99_ms[scenario], out)
                )
        finally:
            server.stop()
        mine = [r for r in results if r.model == model]
        plots.step_load(
            [
                plots.StepPoint(r.scenario, s.users, s.offered_rps, s.achieved_rps, s.p99_ms, s.failures)
                for r in mine
                for s in r.steps
            ],
            {r.scenario: r.p99_target_ms for r in mine},
            out / "step_load.png",
            f"{model}: step load, throughput and p99 against concurrency",
        )
    command = "python -m load_tests " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    doc = {
        "command": command,
        "machine": started,
        "rate_per_user": args.rate_per_user,
        "step_s": args.step_s,
        "results": [{**asdict(r), "capacity_rps": r.best.achieved_rps if r.best else None} for r in results],
    }
    (args.out / "capacity.json").write_text(json.dumps(doc, indent=2))
    print("\n".join(table(results)))
    if args.docs:
        publish(doc, results, args)
    return 0


def table(results: list[Capacity]) -> list[str]:
    lines = [
        "| model | scenario | p99 SLO | highest rate meeting it | its p99 (server's) | generator cores there | "
        "next step |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        best, miss = r.best, r.first_miss
        rate = f"{best.achieved_rps:.0f} req/s ({best.users} users)" if best else "none of the steps"
        beyond = (
            f"{miss.offered_rps:.0f} offered: {miss.missed}"
            if miss
            else f"not reached (every step met it; highest offered {r.steps[-1].offered_rps:.0f} req/s)"
            if r.steps
            else "–"
        )
        lines.append(
            f"| {r.model} | {r.scenario} | {r.p99_target_ms:g} ms | {rate} | "
            f"{f'{report._ms(best.p99_ms)} ms ({report._ms(best.server_p99_ms)})' if best else '–'} | "
            f"{f'{best.generator_cores:.2f}' if best else '–'} | {beyond} |"
        )
    return lines


def publish(doc: dict[str, Any], results: list[Capacity], args: argparse.Namespace) -> None:
    folder = args.docs.parent / "loadtest"
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for model in dict.fromkeys(r.model for r in results):
        png = args.out / model / "step_load.png"
        (folder / f"capacity_{model}.png").write_bytes(png.read_bytes())
        links.append(f"![{model} step load](loadtest/capacity_{model}.png)")
    (folder / "capacity.json").write_text(json.dumps(doc, indent=2))
    m = doc["machine"]
    replace_section(
        args.docs,
        START,
        END,
        [
            START,
            "## Capacity (locust step load: the highest rate that meets each scenario's p99 SLO)",
            "",
            f"Measured {m['date']} on {m['host']}: {m['cores']} cores ({m['cpu']}), load average "
            f"{m['load_average'][0]} at the start; locust {m['locust']}, one generator process on the same cores "
            "as the server. Produced by:",
            "",
            "```bash",
            doc["command"],
            "```",
            "",
            f"Each step runs {args.step_s:g} s (its first {SETTLE_S:g} s not measured) with users pacing themselves to "
            f"{args.rate_per_user:g} req/s each, one row per request; a step meets the SLO when its p99 is within "
            f"the target (from `load_tests/slo/<model>.yaml`), nothing failed and at least {MIN_ANSWERED:.0%} of "
            "the offered rate was answered. Stepping stops at the first miss.",
            "",
            *table(results),
            "",
            *links,
            "",
            "Every step: [loadtest/capacity.json](loadtest/capacity.json).",
            END,
        ],
    )

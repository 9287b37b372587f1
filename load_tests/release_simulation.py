"""Simulated releases through the real driver: A/A false alarms, and time to verdict of bad candidates.

    python -m load_tests.release_simulation --runs 100                        # A/A, bake 30 s, 100 req/s
    python -m load_tests.release_simulation --runs 5 --candidate slow --rate 1000 --bake-s 300

Each release runs the real `ReleaseDriver` (one replica, the file release store), the real
evidence recorder and the real gates, with the default policy (only the bake times set by
`--bake-s`) and a hand-moved clock: every simulated second, fake traffic of Poisson(`--rate`)
requests is answered into the recorder (routed by the step's canary weight, production's answers
copied to the candidate at the shadow share), then the driver ticks once, as it does every
`HOTSERVE_RELEASE_TICK_S` (1 s) in a server. Latencies are drawn from a recorded distribution
(tests/unit/data/recorded_latency_us.txt: the demo MLP at 64 clients, heavy-tailed). The candidate
is production's twin (`same`), or `slow` (every latency x1.5), `errors` (2% of its answers 500,
2% of its copies failed) or `flips` (3% of its copies answer another decision).

For a bad candidate, `evidence_suffices` finds the step at whose end the gate that sees its fault
would reject noiseless evidence (the step's expected counts), the step by which the release
should be rolled back.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np

from server.contract.manifest import Lineage, ModelManifest, TensorSpec
from server.evidence.recorder import MemoryEvidenceRecorder
from server.evidence.summary import LATENCY_BOUNDS_S, CopyComparisons, LatencyHistogram, WindowSummary
from server.metrics.instruments import Metrics
from server.registry.audit import FileAuditLog
from server.registry.control_api import Caller, ControlAPI, Outcome
from server.registry.control_state import ShadowPolicy
from server.release.driver import ReleaseDriver
from server.release.gates import Verdict, agreement_gate, error_gate, gate_alpha, latency_gate
from server.release.policy import ReleasePolicy
from server.release.record import ReleaseRecord, schedule
from server.release.store import LocalReleaseStore

RECORDED = Path(__file__).resolve().parent.parent / "tests" / "unit" / "data" / "recorded_latency_us.txt"
Candidate = Literal["same", "slow", "errors", "flips"]
SLOWDOWN = 1.5
ERROR_RATE = 0.02
FLIP_RATE = 0.03
START = 1_000_000.0
"""The simulated epoch second a release starts at (on an evidence bucket's edge)."""


def recorded_latencies(path: Path = RECORDED) -> np.ndarray:
    """The recorded latencies in seconds, sorted (the file's evenly spaced quantiles)."""
    return np.sort(np.loadtxt(path, comments="#")) / 1e6


class LatencySource:
    """Draws from the recorded distribution: its quantile function, interpolated in log latency
    between the recorded quantiles (so draws are continuous, not the 4,000 values repeated)."""

    def __init__(self, latencies: np.ndarray) -> None:
        self._probabilities = (np.arange(len(latencies)) + 0.5) / len(latencies)
        self._logs = np.log(latencies)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        drawn: np.ndarray = np.exp(np.interp(rng.random(n), self._probabilities, self._logs))
        return drawn

    def bucket_shares(self, scale: float) -> np.ndarray:
        """The share of draws x `scale` in each latency histogram bucket (exact, for noiseless evidence)."""
        cumulative = np.interp(np.log(np.array(LATENCY_BOUNDS_S) / scale), self._logs, self._probabilities, 0.0, 1.0)
        return np.diff(np.concatenate(([0.0], cumulative, [1.0])))


class Routing:
    """The routing a release asks for (what the `Controller` would apply), read by the traffic."""

    def __init__(self) -> None:
        self.weight = 0
        self.shadow_share = 0.0
        self.promoted = False

    def _done(self, action: str) -> Outcome:
        return Outcome(action, "sim", None, None, None, True, 0)

    async def set_shadow(self, caller: Caller, model: str, policy: ShadowPolicy) -> Outcome:
        self.shadow_share = policy.share
        return self._done("shadow")

    async def set_traffic(self, caller: Caller, model: str, weights: dict[str, int]) -> Outcome:
        self.weight = max(w for version, w in weights.items() if version != "production")
        return self._done("traffic")

    async def clear_traffic(self, caller: Caller, model: str) -> Outcome:
        self.weight = 0
        return self._done("clear_traffic")

    async def clear_shadow(self, caller: Caller, model: str) -> Outcome:
        self.shadow_share = 0.0
        return self._done("clear_shadow")

    async def promote(self, caller: Caller, model: str, version: int) -> Outcome:
        self.promoted = True
        return self._done("promote")


@dataclass
class SimOutcome:
    state: str
    step: str
    """The step the verdict came in."""
    seconds: float
    """Simulated seconds from the start to the verdict."""
    requests: int
    candidate_answers: int
    candidate_copies: int
    failed: list[str]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def manifest(version: int) -> ModelManifest:
    return ModelManifest(
        name="sim",
        version=version,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 1])],
        lineage=Lineage(architecture="simulated"),
        onnx_sha256="0" * 64,
    )


async def simulate(
    policy: ReleasePolicy,
    candidate: Candidate,
    rate: float,
    seed: int,
    source: LatencySource,
    folder: Path,
    metrics: Metrics,
    max_seconds: float | None = None,
) -> SimOutcome:
    """One release of a `candidate` at `rate` requests/s through the real driver; its verdict."""
    rng = np.random.default_rng(seed)
    clock = Clock()
    recorder = MemoryEvidenceRecorder(clock=clock)
    production, shadow = recorder.open_load(manifest(1)), recorder.open_load(manifest(2))
    routing = Routing()
    store = LocalReleaseStore(folder / "releases")
    driver = ReleaseDriver(
        store, cast(ControlAPI, routing), recorder, FileAuditLog(folder / "audit.jsonl"), "sim", metrics, clock=clock
    )
    record = ReleaseRecord(
        id=f"sim{seed}", model="sim", version=2, baseline=1, policy=policy, created_by="sim", created_at=clock.now
    )
    await store.put(record, 0)
    slowdown = SLOWDOWN if candidate == "slow" else 1.0
    error_rate = ERROR_RATE if candidate == "errors" else 0.0
    flip_rate = FLIP_RATE if candidate == "flips" else 0.0
    requests = answers = copies = 0
    limit = max_seconds or policy.deadline_s + 10
    while clock.now - START < limit:
        n = int(rng.poisson(rate))
        to_candidate = rng.random(n) < routing.weight / 100
        mine = int(to_candidate.sum())
        latencies = source.draw(rng, n)
        for latency in latencies[~to_candidate].tolist():
            production.answered(200, latency, "v2")
        failing = rng.random(mine) < error_rate
        for latency, failed in zip((latencies[to_candidate] * slowdown).tolist(), failing.tolist(), strict=True):
            shadow.answered(500 if failed else 200, latency, "v2")
        copied = int(rng.binomial(n - mine, routing.shadow_share)) if routing.shadow_share else 0
        outcomes = rng.random(copied)
        for u in outcomes.tolist():
            if u < error_rate:
                shadow.failed()
            else:
                shadow.compared(u >= error_rate + flip_rate, 0.0)
        requests, answers, copies = requests + n, answers + mine, copies + copied
        clock.now += 1.0
        await driver.tick()
        stored = await store.get("sim")
        assert stored is not None
        if stored.finished:
            failed = [
                g.gate for g in (stored.last_decision.gates if stored.last_decision else ()) if g.verdict == "fail"
            ]
            steps = schedule(policy)
            label = steps[stored.step].label if stored.step < len(steps) else "promoted"
            return SimOutcome(stored.state, label, clock.now - START, requests, answers, copies, failed)
    return SimOutcome("running", "-", clock.now - START, requests, answers, copies, [])


def summary_of(
    version: int, answers: float, latency_shares: np.ndarray, errors: float, compared: float, agreed: float
) -> WindowSummary:
    """Noiseless evidence: the expected counts of a step (rounded)."""
    counts = tuple(int(round(answers * share)) for share in latency_shares)
    return WindowSummary(
        model="sim",
        version=version,
        since=0.0,
        until=1.0,
        requests=int(round(answers)),
        errors=int(round(errors)),
        latency=LatencyHistogram(counts=counts),
        comparisons=CopyComparisons(compared=int(round(compared)), agreed=int(round(agreed)), failed=0),
    )


def evidence_suffices(policy: ReleasePolicy, candidate: Candidate, rate: float, source: LatencySource) -> str | None:
    """The first step at whose end (its bake time, at `rate`) the gate that sees `candidate`'s
    fault rejects the step's noiseless evidence; None if no step's does."""
    alpha = gate_alpha(policy)
    bounds = policy.gates
    production_shares, candidate_shares = source.bucket_shares(1.0), source.bucket_shares(SLOWDOWN)
    for step in schedule(policy):
        seconds = policy.shadow_bake_s if step.kind == "shadow" else policy.canary_bake_s
        share = (step.weight or 0) / 100
        n = rate * seconds
        copies = n * (1 - share) * policy.shadow_share
        base = summary_of(1, n * (1 - share), production_shares, 0.0, 0.0, 0.0)
        if candidate == "slow" and step.kind == "canary":
            cand = summary_of(2, n * share, candidate_shares, 0.0, copies, copies)
            verdict = latency_gate(cand, base, bounds, alpha).verdict
        elif candidate == "errors":
            failed = copies * ERROR_RATE
            cand = summary_of(2, n * share, production_shares, n * share * ERROR_RATE, copies - failed, copies - failed)
            cand = cand.model_copy(
                update={"comparisons": cand.comparisons.model_copy(update={"failed": int(round(failed))})}
            )
            verdict = error_gate(cand, base, bounds, copies=step.kind == "shadow", alpha=alpha).verdict
        elif candidate == "flips":
            cand = summary_of(2, n * share, production_shares, 0.0, copies, copies * (1 - FLIP_RATE))
            verdict = agreement_gate(cand, bounds, alpha).verdict
        else:
            continue
        if verdict is Verdict.FAIL:
            return step.label
    return None


def policy_with_bake(bake_s: float) -> ReleasePolicy:
    """The default policy with only its bake times changed."""
    return ReleasePolicy(shadow_bake_s=bake_s, canary_bake_s=bake_s)


def run(runs: int, candidate: Candidate, rate: float, bake_s: float, seed: int) -> list[SimOutcome]:
    source = LatencySource(recorded_latencies())
    policy = policy_with_bake(bake_s)
    metrics = Metrics()
    outcomes = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(runs):
            run_folder = Path(folder) / str(index)
            run_folder.mkdir()
            outcomes.append(asyncio.run(simulate(policy, candidate, rate, seed + index, source, run_folder, metrics)))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--candidate", choices=["same", "slow", "errors", "flips"], default="same")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per simulated second")
    parser.add_argument("--bake-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    outcomes = run(args.runs, args.candidate, args.rate, args.bake_s, args.seed)
    states = {s: sum(o.state == s for o in outcomes) for s in sorted({o.state for o in outcomes})}
    print(
        f"{args.runs} releases of a '{args.candidate}' candidate at {args.rate:g} req/s, bake {args.bake_s:g} s: {states}"
    )
    for state in states:
        done = [o for o in outcomes if o.state == state]
        steps = {s: sum(o.step == s for o in done) for s in dict.fromkeys(o.step for o in done)}
        failed = {g: sum(g in o.failed for o in done) for g in sorted({g for o in done for g in o.failed})}
        print(
            f"  {state}: in step {steps}, failed gates {failed}; median {statistics.median(o.seconds for o in done):.0f} s "
            f"(range {min(o.seconds for o in done):.0f}-{max(o.seconds for o in done):.0f}), "
            f"{statistics.median(o.requests for o in done):.0f} requests, "
            f"{statistics.median(o.candidate_answers for o in done):.0f} answered and "
            f"{statistics.median(o.candidate_copies for o in done):.0f} copies by the candidate"
        )
    if args.candidate != "same":
        policy = policy_with_bake(args.bake_s)
        print(
            f"  evidence first suffices in: {evidence_suffices(policy, args.candidate, args.rate, LatencySource(recorded_latencies()))}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

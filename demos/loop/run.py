"""The loop, step by step, with real processes: `hotserve train`/`export` for v1, `hotserve serve`
(capture on), clients and labels (`traffic.py`), the quality alert's condition (`watch.py`), then
`hotserve retrain` as its own process, as a Job would run it, while traffic goes on.

Used by `python -m demos.loop` (embedded defaults: a local capture directory, no Redis) and by
tests/integration/test_loop.py (Redis, an S3-compatible capture sink, two replicas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from demos.loop.plot import plot
from demos.loop.traffic import RowStream, Traffic
from demos.loop.watch import ALERT_MARGIN, ALERT_MIN_LABELS, Look, Watch
from load_tests.server_process import REPO_ROOT, ServerProcess, start_server

TOKEN_NAME = "HOTSERVE_ADMIN_TOKEN"
RETRAIN_EXIT = {0: "promoted", 1: "rolled back", 2: "inconclusive", 3: "release not started", 4: "not better",
                5: "too few labelled rows", 6: "failed"}  # fmt: skip


class LoopError(RuntimeError):
    """A stage of the loop did not happen (says which, and what was seen)."""


@dataclass(frozen=True)
class LoopSettings:
    work: Path
    sink: str = ""
    """Capture sink; empty: `<work>/capture`."""
    server_env: dict[str, str] = field(default_factory=dict)
    """More `HOTSERVE_*` (and AWS_*) variables for the servers: Redis, an S3 endpoint."""
    job_env: dict[str, str] = field(default_factory=dict)
    """More variables for the retrain job (S3 credentials and endpoint)."""
    replicas: int = 1
    train_rows: int = 10_000
    decision_threshold: float = 0.8
    rate_rps: float = 200.0
    label_delay_s: float = 3.0
    before_shift_s: float = 40.0
    window_s: float = 10.0
    span_s: float = 60.0
    alert_looks: int = 3
    """Consecutive looks (one a second) the alert's condition must hold (Prometheus: `for: 10m`)."""
    retrain_rows: int = 6000
    """Labelled rows since the alert fired that the retrain should find before it starts."""
    retrain_args: tuple[str, ...] = ()
    bake_s: float = 5.0
    """The release's shadow and canary bake times (the demo shortens these and the schedule)."""
    canary_weights: tuple[int, ...] = (50,)
    """One canary step: the p99 gate needs 2,000 answers a side, ~3 minutes at canary 5% of the
    demo's 200 requests/s (the gates' bounds are the defaults)."""
    after_s: float = 30.0
    """Traffic after the verdict, for the new version's live figure."""
    guard_s: float = 900.0
    plot_path: Path | None = None
    seed: int = 11


@dataclass
class LoopResult:
    start: float
    events: list[tuple[float, str]]
    looks: list[Look]
    windows: list[tuple[str, float, float, float, int]]
    retrain_exit: int | None = None
    retrain_output: list[str] = field(default_factory=list)
    production: int | None = None
    answered: int = 0
    failed: int = 0
    labels_joined: int = 0
    label_retries: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    """Requests answered per version."""

    def looks_of(self, version: str, since: float = 0.0) -> list[Look]:
        return [look for look in self.looks if look.version == version and look.at >= since]


class Loop:
    def __init__(self, settings: LoopSettings, say: Callable[[str], None] = print) -> None:
        self.s = settings
        self.say = say
        self.work = settings.work
        self.token = "loop-demo-admin-token-0123456789"
        self.sink = settings.sink or str(self.work / "capture")
        self.start = time.time()
        self.deadline = time.monotonic() + settings.guard_s
        self.result = LoopResult(start=self.start, events=[], looks=[], windows=[])
        self.servers: list[ServerProcess] = []

    # --- timeline --------------------------------------------------------------------------

    def event(self, text: str, mark: str | None = None) -> None:
        """A line of the timeline; `mark` also draws it on the plot under that name."""
        now = time.time()
        if mark is not None:
            self.result.events.append((now, mark))
        self.say(f"[{now - self.start:6.1f} s] {text}")

    def note(self, text: str) -> None:
        self.say(f"[{time.time() - self.start:6.1f} s]   {text}")

    def _guard(self, waiting_for: str) -> None:
        if time.monotonic() > self.deadline:
            raise LoopError(f"gave up after {self.s.guard_s:.0f} s waiting for {waiting_for}")

    # --- processes -------------------------------------------------------------------------

    def _hotserve(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        """Run `hotserve ARGS` (this checkout's) to its end; its output lines."""
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise LoopError(f"hotserve {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout.splitlines()

    def prepare(self) -> None:
        checkpoints, repository = self.work / "checkpoints", self.work / "repository"
        if (repository / "fraud" / "1").is_dir():
            raise LoopError(f"{self.work} holds a previous run: give an empty --work folder")
        self.event(f"hotserve train: v1 on {self.s.train_rows} demo transactions (fraud pattern before the shift)")
        self._hotserve("train", "--name", "fraud", "--dataset", "demo:fraud", "--rows", str(self.s.train_rows),
                       "--checkpoints", str(checkpoints), "--quiet")  # fmt: skip
        self._hotserve("export", str(checkpoints / "fraud" / "1"), "--repository", str(repository),
                       "--decision-threshold", str(self.s.decision_threshold))  # fmt: skip
        policy = {
            "shadow_bake_s": self.s.bake_s,
            "canary_bake_s": self.s.bake_s,
            "canary_weights": list(self.s.canary_weights),
        }
        (self.work / "policy.yaml").write_text(yaml.safe_dump(policy))

    def serve(self) -> None:
        env = {
            TOKEN_NAME: self.token,
            "HOTSERVE_CAPTURE_SINK": self.sink,
            "HOTSERVE_CAPTURE_ROTATE_AGE_S": "1",
            "HOTSERVE_QUALITY_WINDOW_S": str(self.s.window_s),
            "HOTSERVE_QUALITY_SPAN_S": str(self.s.span_s),
            "HOTSERVE_QUALITY_REFRESH_S": "1",
            # evidence in 1 s buckets, releases advanced twice a second: steps start judging sooner
            "HOTSERVE_EVIDENCE_BUCKET_S": "1",
            "HOTSERVE_RELEASE_TICK_S": "0.5",
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_GRPC_PORT": "",
            **self.s.server_env,
        }
        for i in range(self.s.replicas):
            self.servers.append(start_server(self.work / "repository", self.work / f"server-{i}.log", env=env))
        where = ", ".join(server.base_url for server in self.servers)
        self.event(f"hotserve serve: v1 in production at {where}, capturing to {self.sink}", "v1 serves")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> LoopResult:
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            self.prepare()
            self.serve()
            stream = RowStream(self.s.seed)
            traffic = Traffic(
                [s.base_url for s in self.servers], self.token, stream, self.s.rate_rps, self.s.label_delay_s
            )
            watch = Watch(self.servers[0].base_url, self.token)
            traffic.start()
            self.event(
                f"traffic: {self.s.rate_rps:.0f} requests/s, each labelled {self.s.label_delay_s:.0f} s after its answer"
            )
            try:
                with httpx.Client(timeout=30) as client:
                    self._loop(client, stream, traffic, watch)
            finally:
                traffic.stop()
                self.result.answered = traffic.counters.answered
                self.result.failed = traffic.counters.failed
                self.result.labels_joined = traffic.counters.labels_joined
                self.result.label_retries = traffic.counters.label_retries
                self.result.versions = dict(traffic.counters.versions)
                self.result.looks = watch.looks
            return self.result
        finally:
            self.stop()

    def _tick(self, client: httpx.Client, watch: Watch, traffic: Traffic, verbose: bool) -> list[Look]:
        self._guard("the loop")
        time.sleep(1.0)
        looks = watch.look(client)
        if verbose:
            counters = traffic.counters
            shown = "; ".join(
                f"v{look.version} live AUC {_f(look.live)} on {look.labels} labels, estimate {_f(look.estimate)}, "
                f"training {_f(look.reference)}"
                for look in looks
            )
            self.note(
                f"{counters.answered} answered, {counters.labels_joined} labels joined | {shown or 'no figures yet'}"
            )
        if traffic.counters.failed:
            raise LoopError(f"{traffic.counters.failed} requests failed: {list(traffic.errors)}")
        return looks

    def _loop(self, client: httpx.Client, stream: RowStream, traffic: Traffic, watch: Watch) -> None:
        shift_at = time.monotonic() + self.s.before_shift_s
        ticks = 0
        while time.monotonic() < shift_at:
            ticks += 1
            self._tick(client, watch, traffic, ticks % 5 == 0)
        stream.shift()
        self.event("concept shift: fraud moves to the safest merchant categories and to daytime", "concept shift")

        held = 0
        while held < self.s.alert_looks:
            ticks += 1
            looks = self._tick(client, watch, traffic, ticks % 5 == 0)
            held = held + 1 if any(look.version == "1" and look.below_training for look in looks) else 0
        alert = next(look for look in reversed(watch.looks) if look.version == "1")
        self.event(
            f"alert HotserveQualityBelowTraining: v1 live AUC {_f(alert.live)} on {alert.labels} labels, "
            f"{_f(alert.reference)} in training (margin {ALERT_MARGIN}); its label-free estimate {_f(alert.estimate)}",
            "alert",
        )

        # The rows served since the alert fired: all of them under the new pattern (the alert's own
        # span reaches back before it and, when a noisy look fires it soon after the shift, is
        # mostly the old pattern, which a challenger then cannot beat the champion on).
        since = alert.at
        while True:
            labelled = sum(w[4] for w in watch.windows(client, since))
            if labelled >= self.s.retrain_rows:
                break
            ticks += 1
            self._tick(client, watch, traffic, ticks % 5 == 0)
        self.event(
            f"hotserve retrain fraud --since {_iso(since)}: {labelled} labelled rows since the alert fired",
            "retrain",
        )
        code = self._retrain(client, watch, traffic, since)
        self.result.retrain_exit = code
        self.event(f"retrain exited {code} ({RETRAIN_EXIT.get(code, '?')})", RETRAIN_EXIT.get(code, "?"))
        production = (
            client.get(
                f"{self.servers[0].base_url}/admin/models/fraud", headers={"Authorization": f"Bearer {self.token}"}
            )
            .json()["aliases"]
            .get("production")
        )
        self.result.production = production
        after = time.monotonic() + self.s.after_s
        recovered = False
        while time.monotonic() < after:
            ticks += 1
            looks = self._tick(client, watch, traffic, ticks % 5 == 0)
            serving = next((look for look in looks if look.version == str(production)), None)
            if code == 0 and not recovered and serving is not None and serving.live is not None:
                if serving.labels >= ALERT_MIN_LABELS and not serving.below_training:
                    recovered = True
                    self.event(
                        f"v{production} live AUC {_f(serving.live)} on {serving.labels} labels, within {ALERT_MARGIN} "
                        f"of its training AUC {_f(serving.reference)}: the alert's condition no longer holds",
                        "recovered",
                    )
        self.result.windows = watch.windows(client, self.start)
        record = {"events": self.result.events, "windows": self.result.windows, "looks": [vars(x) for x in watch.looks]}
        (self.work / "timeline.json").write_text(json.dumps(record))
        if self.s.plot_path is not None:
            origin = self.result.events[0][0]  # served time starts when v1 serves
            plot(self.s.plot_path, origin, self.result.windows, watch.looks, self.result.events, self.s.span_s)
            self.note(f"plot written to {self.s.plot_path}")

    def _retrain(self, client: httpx.Client, watch: Watch, traffic: Traffic, since: float) -> int:
        """`hotserve retrain` as its own process (as the CronJob's or the alert's Job runs it), its
        output in the timeline; traffic and labels go on meanwhile (the release needs them)."""
        command = [
            sys.executable, "-m", "server.cli", "retrain", "fraud", "--sink", self.sink, "--since", _iso(since),
            "--repository", str(self.work / "repository"), "--checkpoints", str(self.work / "checkpoints"),
            "--policy", str(self.work / "policy.yaml"), "--poll-s", "0.5", "--url", self.servers[0].base_url,
            *(f"--rescan-url={server.base_url}" for server in self.servers),
            *self.s.retrain_args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), TOKEN_NAME: self.token, **self.s.job_env}
        log_path = self.work / "retrain.log"
        with log_path.open("w") as log:
            job = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        shown = 0
        ticks = 0
        while True:
            finished = job.poll() is not None
            lines = log_path.read_text().splitlines()
            for line in lines[shown:]:
                if line.strip():
                    self.say(f"{'':12}retrain | {line}")
                    self.result.retrain_output.append(line)
                    if "routing being applied" in line and "shadow (1/" in line:
                        self.result.events.append((time.time(), "release"))
            shown = len(lines)
            if finished:
                return int(job.returncode)
            ticks += 1
            try:
                self._tick(client, watch, traffic, ticks % 10 == 0)
            except BaseException:
                job.terminate()
                job.wait(timeout=60)
                raise


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")

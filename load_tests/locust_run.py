"""Locust as a library: run user classes against a host in phases (a bounded run, or the steps of a
step load), with locust's CSV and HTML reports and the recorder's timeline.

One process, one gevent loop: on a machine whose cores the server shares, one generator
process is the fair setup, and its CPU time is measured so the report can say what it took.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gevent
import psutil
from locust import User
from locust.env import Environment
from locust.html import get_html_report
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV, StatsCSVFileWriter, stats_history

from load_tests.recorder import Recorder


@dataclass(frozen=True)
class Phase:
    users: int
    spawn_rate: float
    duration_s: float


@dataclass
class PhaseSpan:
    """When a phase ran (epoch seconds), with every user running from `settled`."""

    phase: Phase
    started: float
    settled: float
    ended: float
    generator_cpu_s: float
    """CPU time (user + system) the generator process took during the phase."""


@dataclass
class LoadRun:
    environment: Environment
    recorder: Recorder
    phases: list[PhaseSpan]
    generator_cpu_s: float
    wall_s: float
    user_errors: list[str]
    """Exceptions raised inside user code (not failed requests): a scenario bug, listed."""
    files: dict[str, Path]


def run_load(
    host: str,
    user_classes: list[type[User]],
    phases: list[Phase],
    out_dir: Path,
    prefix: str = "locust",
    recorder: Recorder | None = None,
    keep_going: Callable[[PhaseSpan], bool] | None = None,
) -> LoadRun:
    """Run `phases` one after another (users changed in place between them; `keep_going` may end
    the run after any phase), then stop every user.
    Writes `<prefix>_stats.csv`, `_stats_history.csv`, `_failures.csv`, `_exceptions.csv` and
    `<prefix>.html` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recorder = recorder or Recorder()
    environment = Environment(user_classes=user_classes, host=host)
    environment.events.request.add_listener(recorder.on_request)  # type: ignore[no-untyped-call]  # locust leaves it unannotated
    runner = environment.create_local_runner()
    base = str(out_dir / prefix)
    csv_writer = StatsCSVFileWriter(environment, PERCENTILES_TO_REPORT, base, full_history=True)
    background: list[gevent.Greenlet[..., object]] = [
        gevent.spawn(csv_writer.stats_writer),
        gevent.spawn(stats_history, runner),
    ]
    process = psutil.Process()
    cpu_before, wall_before = sum(process.cpu_times()[:2]), time.monotonic()
    spans = []
    try:
        for phase in phases:
            started, cpu_started = time.time(), sum(process.cpu_times()[:2])
            runner.start(phase.users, spawn_rate=phase.spawn_rate)
            if runner.spawning_greenlet is not None:
                runner.spawning_greenlet.join()
            settled = time.time()
            gevent.sleep(max(0.0, phase.duration_s - (settled - started)))
            spans.append(PhaseSpan(phase, started, settled, time.time(), sum(process.cpu_times()[:2]) - cpu_started))
            if keep_going is not None and not keep_going(spans[-1]):
                break
    finally:
        runner.quit()
        runner.greenlet.join()
        gevent.killall(background)
    cpu_s = sum(process.cpu_times()[:2]) - cpu_before
    wall_s = time.monotonic() - wall_before
    csv_writer.close_files()
    files = _final_reports(environment, base)
    errors = [
        f"{e['count']}x {e['msg']} ({e['traceback'].strip().splitlines()[-1]})" for e in runner.exceptions.values()
    ]
    return LoadRun(environment, recorder, spans, cpu_s, wall_s, errors, files)


def _final_reports(environment: Environment, base: str) -> dict[str, Path]:
    """Locust's CSV writer runs once a second and misses the end of the run: write the totals
    again now that every request is counted, and the HTML report."""
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    files = {
        "stats_csv": Path(f"{base}_stats.csv"),
        "failures_csv": Path(f"{base}_failures.csv"),
        "exceptions_csv": Path(f"{base}_exceptions.csv"),
        "history_csv": Path(f"{base}_stats_history.csv"),
        "html": Path(f"{base}.html"),
    }
    for key, write in (
        ("stats_csv", writer.requests_csv),
        ("failures_csv", writer.failures_csv),
        ("exceptions_csv", writer.exceptions_csv),
    ):
        with files[key].open("w", newline="") as handle:
            write(csv.writer(handle))
    files["html"].write_text(get_html_report(environment, show_download_link=False))  # type: ignore[no-untyped-call]  # unannotated
    return files

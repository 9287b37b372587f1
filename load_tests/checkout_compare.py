"""Same-run comparison of two revisions of hotserve: CPU per 1,000 requests and requests per second.

A reshape must not cost the request path: this serves the demo MLP from two checkouts of the
repository (git worktrees of `--before` and `--after`) side by side, drives each with wrk in turn,
cells alternated (before/after, then after/before, ...) so a drift in the machine's speed favours
neither, and reads each server's own CPU time (utime + stime from `/proc/PID/stat`) around each
cell. On a shared machine throughput swings between cells; CPU per request is the robust figure.

    python -m load_tests.checkout_compare --before 24fc9e2 --after HEAD --rounds 5 --duration 4
    python -m load_tests.checkout_compare --before 27424c1 --after HEAD --rate 1000 --rounds 3   # open loop

`--rate` drives each cell open loop instead (`load_tests/openloop.c`: that many requests per second
whatever the answers, latency counted from when each was due): latency at a load below capacity,
where requests often arrive alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from load_tests.benchmark import (
    bodies,
    cpu_seconds,
    latest_version_dir,
    prepare_repository,
    run_wrk,
    wrk_errors,
    wrk_rate,
)
from load_tests.open_loop import run_open_loop
from load_tests.server_process import ServerProcess, start_server
from server.contract.manifest import ModelManifest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fraud"


@dataclass(frozen=True, slots=True)
class Cell:
    revision: str
    round: int
    requests: int
    requests_per_s: float
    cpu_ms_per_1000: float
    p50_ms: float
    p99_ms: float
    errors: int


def checkout(revision: str, dest: Path) -> Path:
    """A detached worktree of `revision` at `dest` (removed by `drop_checkout`)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(dest), revision], check=True)
    return dest


def drop_checkout(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


def serve_from(path: Path, repository: Path, log: Path, threads: int) -> ServerProcess:
    """`hotserve serve` of the checkout at `path` (its own code on PYTHONPATH) on `repository`."""
    env = {"PYTHONPATH": str(path), "HOTSERVE_LOG_LEVEL": "warning", "HOTSERVE_INTRA_OP_THREADS": str(threads)}
    return start_server(repository, log, env=env, cwd=path, startup_timeout_s=120)


def measure(
    servers: dict[str, ServerProcess],
    manifest: ModelManifest,
    protocol: str,
    clients: int,
    duration_s: int,
    rounds: int,
    workdir: Path,
    rate: float = 0.0,
) -> list[Cell]:
    """Alternated cells of wrk at `clients` connections, or, with `rate`, of an open loop at that
    many requests per second (its errors: failed and unanswered requests)."""
    body, content_type, header_length = bodies(manifest, 1)[protocol]
    path = f"/v2/models/{manifest.name}/infer"
    for server in servers.values():  # warm connections, allocators and the batcher first
        run_wrk(server.base_url + path, body, content_type, header_length, clients, 1, workdir)
    cells = []
    order = list(servers)
    for round_ in range(rounds):
        for revision in order if round_ % 2 == 0 else reversed(order):
            server = servers[revision]
            before = cpu_seconds(server.process.pid)
            if rate:
                o = run_open_loop(server.base_url + path, body, content_type, header_length, rate, duration_s, workdir)
                requests, per_s, p50_ms, p99_ms = (
                    round(o.requests_per_s * duration_s),
                    o.requests_per_s,
                    o.p50_ms,
                    o.p99_ms,
                )
                errors = o.failed + o.unanswered
            else:
                w = run_wrk(server.base_url + path, body, content_type, header_length, clients, duration_s, workdir)
                requests, per_s, p50_ms, p99_ms = (
                    int(w["requests"]),
                    wrk_rate(w),
                    w["p50_us"] / 1000,
                    w["p99_us"] / 1000,
                )
                errors = wrk_errors(w)
            used = cpu_seconds(server.process.pid) - before
            cell = Cell(revision, round_, requests, per_s, used / max(requests, 1) * 1e6, p50_ms, p99_ms, errors)
            print(
                f"   round {round_} {revision:>12s}: {cell.requests_per_s:8.0f} req/s  "
                f"{cell.cpu_ms_per_1000:6.1f} ms CPU/1000 req  p50 {cell.p50_ms:.2f} ms  p99 {cell.p99_ms:.2f} ms  "
                f"errors {errors}",
                flush=True,
            )
            cells.append(cell)
    return cells


def summary(cells: list[Cell], revisions: list[str]) -> str:
    """A markdown table of the medians per revision, and the after/before ratios."""
    lines = [
        "| revision | cells | median req/s | median CPU ms per 1,000 req | median p50 ms | median p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    medians: dict[str, tuple[float, float]] = {}
    for revision in revisions:
        mine = [c for c in cells if c.revision == revision]
        rps = statistics.median(c.requests_per_s for c in mine)
        cpu = statistics.median(c.cpu_ms_per_1000 for c in mine)
        medians[revision] = (rps, cpu)
        lines.append(
            f"| {revision} | {len(mine)} | {rps:.0f} | {cpu:.1f} | "
            f"{statistics.median(c.p50_ms for c in mine):.2f} | "
            f"{statistics.median(c.p99_ms for c in mine):.2f} | {sum(c.errors for c in mine)} |"
        )
    before, after = revisions
    lines.append("")
    lines.append(
        f"after/before: req/s x{medians[after][0] / medians[before][0]:.3f}, "
        f"CPU per request x{medians[after][1] / medians[before][1]:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before", required=True, help="git revision measured first (e.g. the commit before a reshape)"
    )
    parser.add_argument("--after", default="HEAD", help="git revision compared with it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4, help="seconds per cell")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests per second, open loop, instead of wrk's closed loop"
    )
    parser.add_argument("--protocol", choices=["json", "binary"], default="json")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads of each server")
    parser.add_argument(
        "--repository",
        type=Path,
        default=ROOT / "load_tests" / "results" / "bench_repository",
        help="model repository with the demo MLP (trained and exported if missing)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    prepare_repository(args.repository, [MODEL])
    manifest = ModelManifest.read(latest_version_dir(args.repository, MODEL))
    with tempfile.TemporaryDirectory(prefix="hotserve-compare-") as tmp:
        work = Path(tmp)
        revisions = [args.before, args.after]
        paths = {rev: checkout(rev, work / f"checkout-{i}") for i, rev in enumerate(revisions)}
        servers: dict[str, ServerProcess] = {}
        try:
            for i, rev in enumerate(revisions):
                repository = work / f"repository-{i}"  # each its own control state
                shutil.copytree(args.repository, repository, ignore=shutil.ignore_patterns(".hotserve"))
                servers[rev] = serve_from(paths[rev], repository, work / f"server-{i}.log", args.threads)
            load = f"open loop at {args.rate:.0f} req/s" if args.rate else f"wrk -t1 -c{args.clients}"
            print(
                f"== {MODEL} v2 {args.protocol}, {load}, {args.duration} s cells, "
                f"{args.rounds} alternated rounds; {os.cpu_count()} cores",
                flush=True,
            )
            cells = measure(servers, manifest, args.protocol, args.clients, args.duration, args.rounds, work, args.rate)
        finally:
            for server in servers.values():
                server.stop()
            for path in paths.values():
                drop_checkout(path)
    print(summary(cells, revisions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

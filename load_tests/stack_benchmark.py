"""hotserve against the limit of its own stack, and against the server a user would write, in one run.

Three servers side by side on the demo fraud MLP (v2 JSON, one row per request), all on uvicorn +
httptools + uvloop: `bare` (reads the body, answers a fixed v2 response: the stack's limit),
`plain` (FastAPI + onnxruntime on the event loop, `load_tests/stack_apps.py`) and `hotserve`
(`hotserve serve`). Closed loop: wrk at each client count, the three servers alternated within
each round (the order rotating between rounds), medians of `--rounds`; each server's CPU time per
request from `/proc/PID/stat`. Open loop (`load_tests/open_loop.py`): a fixed arrival rate, each
server at `--open-loop` fractions of its own capacity, the rate that keeps its event loop busy
that fraction of the time (`calibrate`, seeded with its closed-loop req/s at the most clients),
so latency is read where a user at normal load sees it.

    python -m load_tests.stack_benchmark                          # writes its section of docs/benchmarks.md
    python -m load_tests.stack_benchmark --duration 3 --rounds 1 --clients 1,64 --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from load_tests.benchmark import (
    RESULTS,
    ROOT,
    bodies,
    cpu_seconds,
    latest_version_dir,
    prepare_repository,
    run_wrk,
    wrk_errors,
    wrk_rate,
)
from load_tests.markdown import replace_section, utc_minute
from load_tests.open_loop import calibrate, event_loop_seconds, run_open_loop
from load_tests.server_process import ServerProcess, start_server
from server.contract.manifest import ModelManifest

MODEL = "fraud"
SERVERS = ("bare", "plain", "hotserve")
START, END = "<!-- stack-benchmark:start -->", "<!-- stack-benchmark:end -->"


@dataclass
class Cell:
    server: str
    round: int
    clients: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int
    loop_us_per_request: float
    """Of the CPU per request, its main thread's: the event loop's (all of it on uvicorn)."""


@dataclass
class OpenCell:
    server: str
    round: int
    fraction: float
    loop_busy: float
    """The server's event loop busy share over the cell (its main thread's CPU time / duration)."""
    offered_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    unanswered: int
    generator_cores: float


def start(name: str, repository: Path, version_dir: Path, log: Path) -> ServerProcess:
    if name == "hotserve":
        return start_server(repository, log, env={"HOTSERVE_LOG_LEVEL": "warning"}, startup_timeout_s=120)
    return start_server(
        repository,
        log,
        command=(sys.executable, "-m", "load_tests.stack_apps", name),
        env={"HOTSERVE_STACK_MODEL": str(version_dir)},
        startup_timeout_s=120,
    )


def closed_loop(
    servers: dict[str, ServerProcess], body: bytes, clients_list: list[int], rounds: int, duration_s: int, work: Path
) -> list[Cell]:
    cells = []
    order = list(servers)
    for url in (s.base_url for s in servers.values()):  # warm connections and allocators
        run_wrk(f"{url}/v2/models/{MODEL}/infer", body, "application/json", None, 4, 1, work)
    for round_ in range(rounds):
        for clients in clients_list:
            for name in order:
                server = servers[name]
                pid = server.process.pid
                before, loop_before = cpu_seconds(pid), cpu_seconds(pid, thread=pid)
                stats = run_wrk(
                    f"{server.base_url}/v2/models/{MODEL}/infer",
                    body,
                    "application/json",
                    None,
                    clients,
                    duration_s,
                    work,
                )
                used, loop_used = cpu_seconds(pid) - before, cpu_seconds(pid, thread=pid) - loop_before
                cell = Cell(
                    name,
                    round_,
                    clients,
                    wrk_rate(stats),
                    stats["p50_us"] / 1000,
                    stats["p99_us"] / 1000,
                    used / stats["requests"] * 1e6 if stats["requests"] else 0.0,
                    wrk_errors(stats),
                    loop_used / stats["requests"] * 1e6 if stats["requests"] else 0.0,
                )
                print(
                    f"   round {round_} {name:9s} c={clients:<3d} {cell.requests_per_s:8.0f} req/s  "
                    f"p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms  "
                    f"CPU {cell.cpu_us_per_request:6.1f} us/req (loop {cell.loop_us_per_request:6.1f})  errors {cell.errors}",
                    flush=True,
                )
                cells.append(cell)
        order = order[1:] + order[:1]
    return cells


def open_loop(
    servers: dict[str, ServerProcess],
    body: bytes,
    capacity: dict[str, float],
    fractions: list[float],
    rounds: int,
    duration_s: int,
    work: Path,
) -> list[OpenCell]:
    rates = {}
    for fraction in fractions:
        for name, server in servers.items():
            found = calibrate(
                f"{server.base_url}/v2/models/{MODEL}/infer",
                body,
                "application/json",
                server.process.pid,
                fraction,
                capacity[name] * fraction / 2,
                work,
            )
            rates[name, fraction] = found.rate
            steps = ", ".join(f"{rate:.0f}/s -> {busy:.0%}" for rate, busy in found.steps)
            print(f"   {name:9s} event loop busy {fraction:.0%} at ~{found.rate:.0f} req/s ({steps})", flush=True)
    cells = []
    order = list(servers)
    for round_ in range(rounds):
        for fraction in fractions:
            for name in order:
                rate = rates[name, fraction]
                loop_before = event_loop_seconds(servers[name].process.pid)
                r = run_open_loop(
                    f"{servers[name].base_url}/v2/models/{MODEL}/infer",
                    body,
                    "application/json",
                    None,
                    rate,
                    duration_s,
                    work,
                )
                busy = (event_loop_seconds(servers[name].process.pid) - loop_before) / duration_s
                cell = OpenCell(
                    name,
                    round_,
                    fraction,
                    busy,
                    rate,
                    r.requests_per_s,
                    r.p50_ms,
                    r.p99_ms,
                    r.failed,
                    r.unanswered,
                    r.generator_cores,
                )
                print(
                    f"   round {round_} {name:9s} open loop {fraction:.0%} ({rate:6.0f}/s, loop {busy:.0%}): "
                    f"{r.requests_per_s:7.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  "
                    f"failed {r.failed}  unanswered {r.unanswered}  generator {r.generator_cores:.2f} cores",
                    flush=True,
                )
                cells.append(cell)
        order = order[1:] + order[:1]
    return cells


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def closed_medians(cells: list[Cell], name: str, clients: int) -> tuple[float, float, float, float]:
    """(req/s, p50, p99, CPU us/request) medians of one server at one client count."""
    mine = [c for c in cells if c.server == name and c.clients == clients]
    return (
        _median([c.requests_per_s for c in mine]),
        _median([c.p50_ms for c in mine]),
        _median([c.p99_ms for c in mine]),
        _median([c.cpu_us_per_request for c in mine]),
    )


def paired(cells: list[Cell], clients: int, other: str) -> tuple[float, str]:
    """hotserve's req/s over `other`'s in each round at `clients`: (median, the rounds' ratios)."""
    by_round: dict[int, dict[str, float]] = {}
    for cell in cells:
        if cell.clients == clients:
            by_round.setdefault(cell.round, {})[cell.server] = cell.requests_per_s
    ratios = [r["hotserve"] / r[other] for r in by_round.values() if r.get(other) and "hotserve" in r]
    return (statistics.median(ratios) if ratios else float("nan")), ", ".join(f"{x:.2f}" for x in ratios)


def report_lines(
    cells: list[Cell], open_cells: list[OpenCell], clients_list: list[int], args: argparse.Namespace, started: str
) -> list[str]:
    top, one = max(clients_list), min(clients_list)
    lines = [
        START,
        "## hotserve against its stack's limit and a plain server",
        "",
        f"Measured {started} on {platform.node()}: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}; demo fraud MLP, v2 JSON, one row per request; closed loop from wrk "
        f"(`-t1`), open loop from `load_tests/openloop.c` (fixed arrival rate, latency from when each request was due), both on the server's cores; medians of "
        f"{args.rounds} alternated rounds of {args.duration} s. Produced by:",
        "",
        "```bash",
        "python -m load_tests.stack_benchmark " + " ".join(sys.argv[1:]),
        "```",
        "",
        "`bare`: uvicorn + httptools + uvloop with an ASGI app that reads the body and answers a fixed v2",
        "response (the limit of the stack); `plain`: FastAPI + onnxruntime, the JSON parsed and the",
        "session run on the event loop (`load_tests/stack_apps.py`); `hotserve`: `hotserve serve` with",
        "its defaults. CPU per request is the server process's CPU time over the requests it answered.",
        "",
        "| server | clients | req/s | p50 ms | p99 ms | CPU us/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for clients in clients_list:
        for name in SERVERS:
            rps, p50, p99, cpu = closed_medians(cells, name, clients)
            lines.append(f"| {name} | {clients} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {cpu:.0f} |")
    if open_cells:
        lines += [
            "",
            "Open loop, each server at the rate that keeps its event loop (main thread) busy that share of",
            "the time, found by `load_tests.open_loop.calibrate` (3 steps of 3 s), then measured in",
            "alternated rounds: `loop busy` is the share measured over those rounds.",
            "",
            "| server | load | offered req/s | loop busy | answered req/s | p50 ms | p99 ms | failed | unanswered |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for fraction in sorted({c.fraction for c in open_cells}):
            for name in SERVERS:
                mine = [c for c in open_cells if c.server == name and c.fraction == fraction]
                if mine:
                    lines.append(
                        f"| {name} | {fraction:.0%} | {_median([c.offered_per_s for c in mine]):.0f} | "
                        f"{_median([c.loop_busy for c in mine]):.0%} | {_median([c.requests_per_s for c in mine]):.0f} | {_median([c.p50_ms for c in mine]):.2f} | "
                        f"{_median([c.p99_ms for c in mine]):.2f} | {sum(c.failed for c in mine)} | "
                        f"{sum(c.unanswered for c in mine)} |"
                    )
    hot_top, bare_top = closed_medians(cells, "hotserve", top), closed_medians(cells, "bare", top)
    hot_one, plain_one = closed_medians(cells, "hotserve", one), closed_medians(cells, "plain", one)
    of_bare, of_plain = paired(cells, top, "bare"), paired(cells, top, "plain")
    one_plain = paired(cells, one, "plain")
    lines += [
        "",
        "Ratios are taken within each round, then the median over rounds (the machine's speed drifts",
        "between rounds):",
        "",
        f"- {top} clients: hotserve reaches {of_bare[0]:.0%} of the bare stack's req/s (rounds {of_bare[1]}) "
        f"and {of_plain[0]:.2f}x the plain server's (rounds {of_plain[1]}); hotserve's CPU per request "
        f"beyond the bare stack's: {hot_top[3] - bare_top[3]:.0f} us",
        f"- {one} client: hotserve {one_plain[0]:.2f}x the plain server's req/s (rounds {one_plain[1]}), "
        f"p99 {hot_one[2]:.2f} vs {plain_one[2]:.2f} ms",
        "",
        END,
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=RESULTS / "repository")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--duration", type=int, default=5, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--open-loop", default="0.5,0.8", help="fractions of each server's capacity to offer open loop ('' for none)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk not found: apt-get install wrk")
    clients_list = [int(c) for c in args.clients.split(",")]
    fractions = [float(f) for f in args.open_loop.split(",") if f]
    started = utc_minute()
    RESULTS.mkdir(parents=True, exist_ok=True)
    prepare_repository(args.repository, [MODEL])
    version_dir = latest_version_dir(args.repository, MODEL)
    body = bodies(ModelManifest.read(version_dir), 1)["json"][0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        servers = {name: start(name, args.repository, version_dir, RESULTS / f"stack-{name}.log") for name in SERVERS}
        try:
            cells = closed_loop(servers, body, clients_list, args.rounds, args.duration, work)
            capacity = {name: closed_medians(cells, name, max(clients_list))[0] for name in SERVERS}
            open_cells = open_loop(servers, body, capacity, fractions, args.rounds, args.duration, work)
        finally:
            for server in servers.values():
                server.stop()
    (RESULTS / "stack_benchmark.json").write_text(
        json.dumps({"closed": [asdict(c) for c in cells], "open": [asdict(c) for c in open_cells]}, indent=1)
    )
    lines = report_lines(cells, open_cells, clients_list, args, started)
    print("\n".join(lines[-4:-2]))
    replace_section(args.out, START, END, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ASGI server under the REST lane: uvicorn (httptools + uvloop) against Granian, in one run.

The same apps on each server, all started side by side: `bare` (reads the body, answers a fixed v2
response: the server's own limit) and `hotserve` (hotserve's app), each on uvicorn (`bare`: uvicorn
+ httptools + uvloop; `hotserve`: `hotserve serve`, with its one-write protocol) and on Granian
2.x (`python -m load_tests.stack_apps APP --server granian`: its embedded server in the process's
uvloop, HTTP/1, one Rust runtime thread). Closed loop from wrk on the demo fraud MLP (v2 JSON, one
row per request), the servers alternated within each round (the order rotating between rounds),
medians of `--rounds`; the ratio Granian / uvicorn of each app is taken within each round.

CPU per request is the server process's (all its threads: on Granian, its Rust runtime thread
parses and writes HTTP beside the Python event loop); `loop` is its main thread's alone, the event
loop's. The load generator runs on the same cores, so CPU a server spends off its event loop is
CPU wrk does not get.

    python -m load_tests.asgi_benchmark                                   # its section of docs/benchmarks.md
    python -m load_tests.asgi_benchmark --duration 3 --rounds 1 --out /tmp/a.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from statistics import median

from load_tests.benchmark import RESULTS, ROOT, bodies, latest_version_dir, prepare_repository
from load_tests.markdown import replace_section, utc_minute
from load_tests.server_process import ServerProcess, start_server
from load_tests.stack_benchmark import Cell, closed_loop
from server.contract.manifest import ModelManifest

MODEL = "fraud"
APPS = ("bare", "hotserve")
ASGI_SERVERS = ("uvicorn", "granian")
START, END = "<!-- asgi-benchmark:start -->", "<!-- asgi-benchmark:end -->"


def key(app: str, server: str) -> str:
    """The name of `app` on `server` in `stack_benchmark`'s cells."""
    return f"{app}@{server}"


def start(app: str, server: str, repository: Path, version_dir: Path, log: Path) -> ServerProcess:
    env = {"HOTSERVE_LOG_LEVEL": "warning", "HOTSERVE_STACK_MODEL": str(version_dir)}
    if app == "hotserve" and server == "uvicorn":
        return start_server(repository, log, env=env, startup_timeout_s=120)
    command = (sys.executable, "-m", "load_tests.stack_apps", app, "--server", server)
    return start_server(repository, log, command=command, env=env, startup_timeout_s=120)


def ratios(cells: list[Cell], app: str, clients: int) -> list[float]:
    """Granian's req/s over uvicorn's for `app` at `clients`, one per round."""
    by_round: dict[int, dict[str, float]] = {}
    for cell in cells:
        if cell.clients == clients:
            by_round.setdefault(cell.round, {})[cell.server] = cell.requests_per_s
    uvicorn, granian = key(app, "uvicorn"), key(app, "granian")
    return [r[granian] / r[uvicorn] for r in by_round.values() if r.get(uvicorn) and granian in r]


def report_lines(
    cells: list[Cell], apps: list[str], clients_list: list[int], args: argparse.Namespace, started: str
) -> list[str]:
    import granian
    import uvicorn

    lines = [
        START,
        f"Measured {started} on {platform.node()}: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, uvicorn {uvicorn.__version__}, Granian {granian.__version__}; demo fraud "
        f"MLP, v2 JSON, one row per request; wrk (`-t1`) on the servers' cores; medians of {args.rounds} "
        f"alternated rounds of {args.duration} s. Produced by:",
        "",
        '```bash title="illustration"',
        "python -m load_tests.asgi_benchmark " + " ".join(sys.argv[1:]),
        "```",
        "",
        "| app | server | clients | req/s | p50 ms | p99 ms | CPU us/request | of it, event loop | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for app in apps:
        for clients in clients_list:
            for name in ASGI_SERVERS:
                mine = [c for c in cells if c.server == key(app, name) and c.clients == clients]
                lines.append(
                    f"| {app} | {name} | {clients} | {median([c.requests_per_s for c in mine]):.0f} | "
                    f"{median([c.p50_ms for c in mine]):.2f} | {median([c.p99_ms for c in mine]):.2f} | "
                    f"{median([c.cpu_us_per_request for c in mine]):.0f} | "
                    f"{median([c.loop_us_per_request for c in mine]):.0f} | {sum(c.errors for c in mine)} |"
                )
    lines += ["", "Granian's req/s over uvicorn's, within each round (median, then the rounds):", ""]
    for app in apps:
        for clients in clients_list:
            found = ratios(cells, app, clients)
            lines.append(
                f"- {app}, {clients} client{'s' if clients > 1 else ''}: x{median(found):.2f} "
                f"(rounds {', '.join(f'{x:.2f}' for x in found)})"
            )
    lines += ["", END]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=RESULTS / "repository")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--duration", type=int, default=4, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apps", default=",".join(APPS), help="which of bare,hotserve to run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk not found: apt-get install wrk")
    apps = [a for a in args.apps.split(",") if a]
    if not apps or set(apps) - set(APPS):
        parser.error(f"--apps: a comma-separated subset of {','.join(APPS)}")
    clients_list = [int(c) for c in args.clients.split(",")]
    started = utc_minute()
    RESULTS.mkdir(parents=True, exist_ok=True)
    prepare_repository(args.repository, [MODEL])
    version_dir = latest_version_dir(args.repository, MODEL)
    body = bodies(ModelManifest.read(version_dir), 1)["json"][0]
    servers: dict[str, ServerProcess] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for app in apps:
                for name in ASGI_SERVERS:
                    log = RESULTS / f"asgi-{app}-{name}.log"
                    servers[key(app, name)] = start(app, name, args.repository, version_dir, log)
            cells = closed_loop(servers, body, clients_list, args.rounds, args.duration, Path(tmp))
        finally:
            for server in servers.values():
                server.stop()
    (RESULTS / "asgi_benchmark.json").write_text(json.dumps([asdict(c) for c in cells], indent=1))
    lines = report_lines(cells, apps, clients_list, args, started)
    print("\n".join(line for line in lines if line.startswith("- ")))
    replace_section(args.out, START, END, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

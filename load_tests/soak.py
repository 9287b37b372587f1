"""Soak: minutes of load with a version change every few seconds; the server's memory (RSS) and open
file descriptors should level off, and no request may fail.

    python -m load_tests.soak                                  # 180 s, a change every 3 s, 4 clients
    python -m load_tests.soak --duration-s 30 --change-every-s 1

The swap benchmark's two 17 MB MLP versions in a fresh repository, served by one `hotserve serve`
with HOTSERVE_KEEP_PREVIOUS_LOADED=false, so every change loads, verifies and warms up one
version and drains and unloads the other (the path where a leak would show). With a
`redis-server` on PATH the control state lives in a private Redis of the run's own, signed, so
the change feed, compare-and-set and signatures run too. `--clients` connections post one-row v2
requests to the unpinned route throughout; RSS (/proc/<pid>/status) and open descriptors
(/proc/<pid>/fd) are sampled every `--sample-every-s`, the first after `--warmup-s`. Needs the
`train` extra (onnx) and Linux.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from load_tests.benchmark import RESULTS
from load_tests.server_process import free_port, start_server
from load_tests.swap_benchmark import FEATURES, MODEL, TOKEN, write_repository
from server.admin_client import AdminClient, model_path
from server.contract.aliases import PRODUCTION

SIGNING_KEY = "soak-control-signing-key-" + "0" * 32
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": [0.1] * FEATURES}]})


@dataclass(frozen=True)
class Sample:
    at_s: float
    rss_bytes: int
    open_fds: int


@dataclass
class SoakResult:
    duration_s: float
    clients: int
    change_every_s: float
    control_state: str
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    changes: int = 0
    samples: list[Sample] = field(default_factory=list)


def process_sample(pid: int, started: float) -> Sample:
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return Sample(round(time.monotonic() - started, 1), rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd")))


@contextmanager
def private_redis(folder: Path) -> Iterator[str | None]:
    """A redis-server of this run's own on a free port (None when none is installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _clients(base_url: str, clients: int, stop: asyncio.Event, result: SoakResult) -> None:
    versions: Counter[str] = Counter()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            while not stop.is_set():
                result.requests += 1
                try:
                    response = await http.post(f"/v2/models/{MODEL}/infer", content=BODY)
                except httpx.HTTPError as error:
                    result.failures.append(repr(error))
                    continue
                if response.status_code != 200:
                    result.failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    versions[response.json()["model_version"]] += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    result.versions = dict(versions)


async def _changes(base_url: str, every_s: float, stop: asyncio.Event, result: SoakResult) -> None:
    version = 1
    admin = AdminClient(base_url, TOKEN, timeout_s=120)
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every_s)  # the change period, not a synchronisation
            return
        except TimeoutError:
            pass
        path = model_path(MODEL, "aliases", PRODUCTION)
        status, doc = await asyncio.to_thread(admin.request, "PUT", path, {"version": version})
        if status != 200:
            result.failures.append(f"change to v{version}: {status} {str(doc)[:200]}")
        result.changes += 1
        version = 3 - version


async def _drive(base_url: str, pid: int, result: SoakResult, warmup_s: float, sample_every_s: float) -> None:
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [
        asyncio.ensure_future(_clients(base_url, result.clients, stop, result)),
        asyncio.ensure_future(_changes(base_url, result.change_every_s, stop, result)),
    ]
    next_sample = warmup_s
    while (elapsed := time.monotonic() - started) < result.duration_s:
        if elapsed >= next_sample:
            result.samples.append(process_sample(pid, started))
            next_sample += sample_every_s
        await asyncio.sleep(0.5)  # the sampling period, not a synchronisation
    result.samples.append(process_sample(pid, started))
    stop.set()
    await asyncio.gather(*tasks)


def soak(
    duration_s: float, change_every_s: float, clients: int, warmup_s: float = 15.0, sample_every_s: float = 10.0
) -> SoakResult:
    """Run one soak; returns what it measured (failures included, never raised)."""
    with tempfile.TemporaryDirectory(prefix="hotserve-soak-") as tmp, private_redis(Path(tmp)) as redis_url:
        root = Path(tmp)
        write_repository(root / "repository")
        env = {
            "HOTSERVE_ADMIN_TOKEN": TOKEN,
            "HOTSERVE_KEEP_PREVIOUS_LOADED": "false",
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
            "HOTSERVE_AUDIT_LOG_PATH": str(root / "audit.jsonl"),
        }
        if redis_url is not None:
            env |= {"HOTSERVE_REDIS_URL": redis_url, "HOTSERVE_CONTROL_SIGNING_KEY": SIGNING_KEY}
        result = SoakResult(duration_s, clients, change_every_s, "redis (signed)" if redis_url else "file")
        with start_server(root / "repository", root / "server.log", env=env) as server:
            asyncio.run(_drive(server.base_url, server.process.pid, result, warmup_s, sample_every_s))
        return result


def markdown(result: SoakResult) -> str:
    first, last = result.samples[0], result.samples[-1]
    mib = 1024 * 1024
    lines = [
        f"{result.duration_s:.0f} s, {result.clients} clients, production changed every {result.change_every_s} s "
        f"({result.changes} changes, each a load + drain + unload), control state: {result.control_state}; "
        f"{result.requests} requests, {len(result.failures)} failed; answers by version {result.versions}",
        "",
        "| | at (s) | RSS (MiB) | open FDs |",
        "|---|---:|---:|---:|",
        f"| start (after warm-up) | {first.at_s} | {first.rss_bytes / mib:.1f} | {first.open_fds} |",
        f"| end | {last.at_s} | {last.rss_bytes / mib:.1f} | {last.open_fds} |",
        "",
        "Every sample (s: RSS MiB / FDs): "
        + ", ".join(f"{s.at_s:.0f}: {s.rss_bytes / mib:.0f}/{s.open_fds}" for s in result.samples),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--change-every-s", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--sample-every-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = soak(args.duration_s, args.change_every_s, args.clients, args.warmup_s, args.sample_every_s)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(asdict(result), indent=2))
    print(markdown(result))
    for failure in result.failures[:20]:
        print("failure:", failure)
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

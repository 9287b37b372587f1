"""Record a real latency distribution once, for the release simulation's A/A and power figures.

    python -m load_tests.record_latencies --duration 20 --clients 64

One `hotserve serve` on the shadow benchmark's repository (`fast` v1: the 16 -> 64 -> 1 MLP,
batching on), wrk at `--clients` connections for `--duration` seconds sending one-row v2 JSON,
then wrk's per-request latency histogram (microsecond resolution) read back as `--values`
evenly spaced quantiles: a sample of the distribution, heavy tail included, small enough to keep
in the tests folder (tests/unit/data/recorded_latency_us.txt, with a header saying how it was
recorded). Needs wrk and the `train` extra (onnx).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from load_tests.benchmark import LUA_SCRIPT, ROOT, bodies
from load_tests.server_process import start_server
from load_tests.shadow_benchmark import MODEL, write_repository
from server.contract.manifest import ModelManifest

OUTPUT = ROOT / "tests" / "unit" / "data" / "recorded_latency_us.txt"
QUANTILES_LUA = ROOT / "load_tests" / "wrk_quantiles.lua"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--values", type=int, default=4000)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        write_repository(work / "repository")
        manifest = ModelManifest.read(work / "repository" / MODEL / "1")
        body, content_type, _ = bodies(manifest, 1)["json"]
        (work / "body.json").write_bytes(body)
        env = {
            **os.environ,
            "WRK_BODY": str(work / "body.json"),
            "WRK_CONTENT_TYPE": content_type,
            "WRK_POST_LUA": str(LUA_SCRIPT),
            "WRK_QUANTILES": str(args.values),
        }
        server_env = {"HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider", "HOTSERVE_LOG_LEVEL": "warning"}
        with start_server(work / "repository", work / "server.log", env=server_env) as server:
            url = f"{server.base_url}/v2/models/{MODEL}/infer"
            wrk = ["wrk", "-t1", "--timeout", "10s", "-s", str(QUANTILES_LUA), url]
            subprocess.run([*wrk, "-c4", "-d2s"], env=env, capture_output=True, check=True)  # warm up
            done = subprocess.run(
                [*wrk, f"-c{args.clients}", f"-d{args.duration}s"], env=env, capture_output=True, text=True, check=True
            )
    lines = done.stdout.splitlines()
    requests, failed = (int(v) for v in next(ln for ln in lines if ln.startswith("WRK_REQUESTS ")).split()[1:])
    values = [int(ln.split()[1]) for ln in lines if ln.startswith("WRK_QUANTILE ")]
    header = [
        f"# {len(values)} latencies (us): the (i - 0.5)/{len(values)} quantiles of {requests} requests' latencies",
        f"# ({failed} failed), wrk -t1 -c{args.clients} -d{args.duration}s, one-row v2 JSON to the shadow benchmark's",
        f"# `fast` MLP on one `hotserve serve` ({platform.node()}, {os.cpu_count()} CPUs, shared with other work);",
        "# recorded by `python -m load_tests.record_latencies`. Used by tests/unit/test_release_simulation.py.",
    ]
    args.output.write_text("\n".join([*header, *map(str, values)]) + "\n")
    print(f"{len(values)} quantiles of {requests} requests written to {args.output}")
    print(f"p50 {values[len(values) // 2]} us, p99 {values[int(len(values) * 0.99)]} us, max {values[-1]} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

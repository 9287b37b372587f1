"""Hot swap under load: how long a swap takes, and p50/p99 while versions swap vs steady state.

    python -m load_tests.swap_benchmark                          # 10 s per phase, 16 connections
    python -m load_tests.swap_benchmark --duration 5 --interval 0.5 --clients 16

Two versions of one MLP (64 -> 1024 -> 1024 -> 1, ~4.3 M weights, 17 MB each) in a fresh
repository; wrk sends v2 JSON requests (one row) to the unpinned route for `--duration` s per
phase while:
  steady      nothing changes;
  warm swaps  `production` alternates v1 <-> v2 every `--interval` s, both kept loaded (the
              default, HOTSERVE_KEEP_PREVIOUS_LOADED=true): each swap is a routing change;
  cold swaps  on a server with HOTSERVE_KEEP_PREVIOUS_LOADED=false: each promotion loads,
              verifies and warms up the version, switches, then drains and unloads the other.
Each server first swaps 10 times with no traffic (the swap's own cost), then runs its steady
phase just before its swapping one. Swap duration is the admin call's wall time seen by the
client (cold swaps include the load and the drain of the other version) and the server's own
`hotserve_model_swap_duration_seconds` (call to new routing published). Needs wrk and the
`train` extra (onnx).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from load_tests.benchmark import RESULTS, run_wrk, wrk_errors, wrk_rate
from load_tests.server_process import ServerProcess, start_server
from server.admin_client import AdminClient, model_path
from server.contract.aliases import PRODUCTION
from server.contract.manifest import ONNX_FILENAME, BatchingPolicy, Lineage, ModelManifest, TensorSpec, sha256_file

MODEL = "swap"
FEATURES, HIDDEN = 64, 1024
TOKEN = "swap-benchmark-admin-token"


@dataclass
class Phase:
    server: str
    phase: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    swaps: int
    swap_call_p50_ms: float | None
    swap_call_max_ms: float | None
    swap_server_mean_ms: float | None


def mlp(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    shapes = {"W1": (FEATURES, HIDDEN), "W2": (HIDDEN, HIDDEN), "W3": (HIDDEN, 1)}
    weights = [
        numpy_helper.from_array((rng.normal(size=s) / np.sqrt(s[0])).astype(np.float32), n) for n, s in shapes.items()
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "W2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "W3"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def write_repository(root: Path) -> None:
    for version in (1, 2):
        folder = root / MODEL / str(version)
        folder.mkdir(parents=True)
        onnx.save(mlp(version), folder / ONNX_FILENAME)
        ModelManifest(
            name=MODEL,
            version=version,
            inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, FEATURES])],
            outputs=[TensorSpec(name="score", datatype="FP32", shape=[-1, 1])],
            batching=BatchingPolicy(max_batch_size=32, max_queue_delay_ms=1.0),
            lineage=Lineage(architecture="swap-benchmark-mlp"),
            onnx_sha256=sha256_file(folder / ONNX_FILENAME),
        ).write(folder)
    (root / ".hotserve").mkdir()
    (root / ".hotserve" / "control.json").write_text(json.dumps({"models": {MODEL: {"aliases": {PRODUCTION: 1}}}}))


def promote(url: str, version: int) -> float:
    """PUT production -> version; returns the call's wall time in seconds."""
    client = AdminClient(url, TOKEN, timeout_s=120)
    started = time.perf_counter()
    client.call("PUT", model_path(MODEL, "aliases", PRODUCTION), {"version": version})
    return time.perf_counter() - started


class Swapper(threading.Thread):
    """Alternates production between v1 and v2 every `interval_s` until stopped."""

    def __init__(self, url: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval_s = url, interval_s
        self.calls_s: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        version = 2
        while not self.stop.wait(self.interval_s):
            self.calls_s.append(promote(self.url, version))
            version = 3 - version


def swap_histogram(url: str) -> tuple[float, float]:
    """(sum, count) of the server's hotserve_model_swap_duration_seconds."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = dict(re.findall(r"hotserve_model_swap_duration_seconds_(sum|count)\{[^}]*\} (\S+)", text))
    return float(values.get("sum", 0.0)), float(values.get("count", 0.0))


def idle_swaps(server: ServerProcess, name: str, count: int = 10) -> Phase:
    """`count` swaps back to back with no traffic: the swap's own cost."""
    before = swap_histogram(server.base_url)
    calls = [promote(server.base_url, 2 - i % 2) for i in range(count)]
    after = swap_histogram(server.base_url)
    swaps = int(after[1] - before[1])
    result = Phase(
        server=name,
        phase="idle",
        requests_per_s=0.0,
        p50_ms=0.0,
        p99_ms=0.0,
        errors=0,
        swaps=swaps,
        swap_call_p50_ms=statistics.median(calls) * 1000,
        swap_call_max_ms=max(calls) * 1000,
        swap_server_mean_ms=(after[0] - before[0]) / swaps * 1000 if swaps else None,
    )
    print(
        f"  {name:18s} idle swaps {swaps}  call p50 {result.swap_call_p50_ms:.1f} ms "
        f"max {result.swap_call_max_ms:.1f} ms  server mean {result.swap_server_mean_ms:.1f} ms",
        flush=True,
    )
    return result


def measure(
    server: ServerProcess, name: str, phase: str, body: bytes, args: argparse.Namespace, workdir: Path
) -> Phase:
    url = server.base_url
    swapper = Swapper(url, args.interval) if phase != "steady" else None
    before = swap_histogram(url)
    if swapper is not None:
        swapper.start()
    try:
        w = run_wrk(
            f"{url}/v2/models/{MODEL}/infer", body, "application/json", None, args.clients, args.duration, workdir
        )
    finally:
        if swapper is not None:
            swapper.stop.set()
            swapper.join()
    after = swap_histogram(url)
    calls = swapper.calls_s if swapper is not None else []
    swaps = int(after[1] - before[1])
    result = Phase(
        server=name,
        phase=phase,
        requests_per_s=wrk_rate(w),
        p50_ms=w["p50_us"] / 1000,
        p99_ms=w["p99_us"] / 1000,
        errors=wrk_errors(w),
        swaps=swaps,
        swap_call_p50_ms=statistics.median(calls) * 1000 if calls else None,
        swap_call_max_ms=max(calls) * 1000 if calls else None,
        swap_server_mean_ms=(after[0] - before[0]) / swaps * 1000 if swaps else None,
    )
    print(
        f"  {name:18s} {phase:11s} {result.requests_per_s:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}  swaps {swaps}"
        + (
            f"  call p50 {result.swap_call_p50_ms:.1f} ms max {result.swap_call_max_ms:.1f} ms"
            f"  server mean {result.swap_server_mean_ms:.1f} ms"
            if calls and swaps
            else ""
        ),
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=16, help="wrk connections")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between swaps")
    args = parser.parse_args(argv)
    x = np.random.default_rng(0).normal(size=(1, FEATURES)).astype(np.float32)
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": x.ravel().tolist()}]}
    ).encode()
    results: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="hotserve-swap-") as tmp:
        workdir = Path(tmp)
        for name, keep in [("kept loaded", "true"), ("loaded per swap", "false")]:
            repository = workdir / name.replace(" ", "-")
            write_repository(repository)
            server = start_server(
                repository,
                workdir / f"{repository.name}.log",
                ready_path="/v2/health/ready",
                env={
                    "HOTSERVE_ADMIN_TOKENS": f"bench:{TOKEN}",
                    "HOTSERVE_KEEP_PREVIOUS_LOADED": keep,
                    "HOTSERVE_LOG_LEVEL": "warning",
                },
            )
            try:
                run_wrk(
                    f"{server.base_url}/v2/models/{MODEL}/infer",
                    body,
                    "application/json",
                    None,
                    args.clients,
                    1,
                    workdir,
                )  # warm connections and allocators
                results.append(idle_swaps(server, name))
                results.append(measure(server, name, "steady", body, args, workdir))
                results.append(measure(server, name, "swapping", body, args, workdir))
            finally:
                server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "swap_benchmark.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"results: {out}")
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Capture's cost to the primary: every answered request captured (share 1.0) against capture off.

    python -m load_tests.capture_benchmark                      # 8 s per phase, 3 rounds
    python -m load_tests.capture_benchmark --duration 2 --rounds 1

One server with a local capture sink (a temporary directory) and one model, `fast` (the small MLP
of the shadow benchmark, 16 -> 64 -> 1). wrk sends v2 JSON (one row) in alternating phases, each
round: `off` and `capture` at `--clients` connections (req/s), then `off 1` and `capture 1` at one
connection (p50). Capture is switched per phase through the admin API
(`PUT /admin/models/fast/capture`, share 0 or 1), so both configurations run on the same process;
each capture phase is compared with the `off` phase of its own round (the machine's speed drifts
between rounds), then the median over rounds. Goals (issue 33): at most 5% fewer req/s at 64
clients, at most +0.1 ms p50 at one client. The rows the server accepted, wrote and dropped are
read from its metrics. Needs wrk, a C compiler and the `train` extra (onnx).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pyarrow.parquet as pq

from load_tests.benchmark import RESULTS, run_wrk, wrk_errors, wrk_rate
from load_tests.server_process import start_server
from load_tests.shadow_benchmark import FEATURES, mlp
from server.admin_client import AdminClient
from server.contract.manifest import ONNX_FILENAME, BatchingPolicy, Lineage, ModelManifest, TensorSpec, sha256_file

MODEL = "fast"
TOKEN = "capture-benchmark-admin-token"
GOAL_THROUGHPUT = 0.95
GOAL_P50_MS = 0.1


@dataclass
class Phase:
    round: int
    phase: str
    clients: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    accepted: int
    written: int
    dropped: int


def write_repository(root: Path) -> None:
    folder = root / MODEL / "1"
    folder.mkdir(parents=True)
    onnx.save(mlp(1, [64]), folder / ONNX_FILENAME)
    ModelManifest(
        name=MODEL,
        version=1,
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, FEATURES])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 1])],
        batching=BatchingPolicy(max_batch_size=64, max_queue_size=256),
        lineage=Lineage(architecture="mlp"),
        onnx_sha256=sha256_file(folder / ONNX_FILENAME),
    ).write(folder)


def admin(url: str, method: str, path: str, body: Any = None) -> Any:
    return AdminClient(url, TOKEN, timeout_s=120).call(method, path, body)


def capture_counts(url: str) -> dict[str, float]:
    """Rows accepted, written and dropped so far (every label set summed)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {"accepted": 0.0, "written": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        for key in counts:
            prefix = f"hotserve_capture_{key}_records_total"
            if line.startswith(prefix + "{") or line.startswith(prefix + " "):
                counts[key] += float(line.rsplit(" ", 1)[1])
    return counts


def paired(phases: list[Phase]) -> list[str]:
    """Each capture phase against `off` at the same client count in the same round, then the
    median over rounds, with the goal it is held to."""
    found = {(p.round, p.phase): p for p in phases}
    rounds = sorted({p.round for p in phases})
    lines = []
    ratios = [
        found[r, "capture"].requests_per_s / found[r, "off"].requests_per_s
        for r in rounds
        if (r, "capture") in found and (r, "off") in found and found[r, "off"].requests_per_s
    ]
    if ratios:
        median = statistics.median(ratios)
        verdict = "meets" if median >= GOAL_THROUGHPUT else "misses"
        lines.append(
            f"req/s with capture / off, same round: median {median:.3f} ({', '.join(f'{x:.3f}' for x in ratios)}); "
            f"{verdict} the goal >= {GOAL_THROUGHPUT}"
        )
    deltas = [
        found[r, "capture 1"].p50_ms - found[r, "off 1"].p50_ms
        for r in rounds
        if (r, "capture 1") in found and (r, "off 1") in found
    ]
    if deltas:
        median = statistics.median(deltas)
        verdict = "meets" if median <= GOAL_P50_MS else "misses"
        lines.append(
            f"p50 at one client, capture - off, same round: median {median:+.3f} ms "
            f"({', '.join(f'{x:+.3f}' for x in deltas)}); {verdict} the goal <= +{GOAL_P50_MS} ms"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, FEATURES],
                    "data": rng.normal(size=FEATURES).round(4).tolist(),
                }
            ]
        }
    ).encode()
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_repository(work / "repository")
        server = start_server(
            work / "repository",
            RESULTS / "server-capture.log",
            env={
                "HOTSERVE_ADMIN_TOKENS": f"bench:{TOKEN}",
                "HOTSERVE_LOG_LEVEL": "warning",
                "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
                "HOTSERVE_CONTROL_STATE_PATH": str(work / "control.json"),
                "HOTSERVE_CAPTURE_SINK": str(work / "capture"),
            },
            startup_timeout_s=120,
        )
        try:
            url = server.base_url
            infer = f"{url}/v2/models/{MODEL}/infer"
            run_wrk(infer, body, "application/json", None, 8, 2, work)  # warm up (captured)
            for round_ in range(1, args.rounds + 1):
                for phase, share, clients in [
                    ("off", 0.0, args.clients),
                    ("capture", 1.0, args.clients),
                    ("off 1", 0.0, 1),
                    ("capture 1", 1.0, 1),
                ]:
                    admin(url, "PUT", f"/admin/models/{MODEL}/capture", {"share": share})
                    before = capture_counts(url)
                    w = run_wrk(infer, body, "application/json", None, clients, args.duration, work)
                    time.sleep(0.3)  # the writer's wake-up (0.1 s) takes what the phase queued
                    after = capture_counts(url)
                    delta = {k: int(after[k] - before[k]) for k in after}
                    phases.append(
                        Phase(
                            round_,
                            phase,
                            clients,
                            wrk_rate(w),
                            w["p50_us"] / 1000,
                            w["p99_us"] / 1000,
                            wrk_errors(w),
                            delta["accepted"],
                            delta["written"],
                            delta["dropped"],
                        )
                    )
                    print(json.dumps(asdict(phases[-1])), flush=True)
        finally:
            server.stop()
        files = sorted((work / "capture").rglob("*.parquet"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    print("\nphase       clients   req/s   p50 ms  p99 ms  errors  accepted  dropped  (median of rounds)")
    for name in ("off", "capture", "off 1", "capture 1"):
        chosen = [p for p in phases if p.phase == name]
        print(
            f"{name:10s} {chosen[0].clients:8d} {statistics.median(p.requests_per_s for p in chosen):7.0f} "
            f"{statistics.median(p.p50_ms for p in chosen):7.3f} {statistics.median(p.p99_ms for p in chosen):7.3f} "
            f"{sum(p.errors for p in chosen):7d} {sum(p.accepted for p in chosen):9d} {sum(p.dropped for p in chosen):8d}"
        )
    print(f"\n{rows} rows in {len(files)} Parquet files after the server stopped (flushed on SIGTERM)")
    for line in paired(phases):
        print(line)
    (RESULTS / "capture_benchmark.json").write_text(json.dumps([asdict(p) for p in phases], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

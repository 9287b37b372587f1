"""What drift monitoring costs: the server with drift sampling on vs off, in one run, plus the parts.

* in process: one `VersionDrift.record` (the batcher's per-batch hook, on the event loop) per batch
  size, and one `compute()` over a full window (on a worker thread, every HOTSERVE_DRIFT_INTERVAL_S);
* two `hotserve serve` processes on the demo fraud model, `HOTSERVE_DRIFT_ENABLED` true and false,
  driven by wrk cell by cell, alternating, with v2 JSON bodies of one row.

  python -m load_tests.drift_cost                      # 1 and 64 clients, 8 s a cell
  python -m load_tests.drift_cost --duration 3 --clients 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from load_tests.benchmark import (
    RESULTS,
    LoadResult,
    example_rows,
    latest_version_dir,
    measure,
    prepare_repository,
    serving,
)
from server.contract.manifest import ModelManifest
from server.monitoring.drift import DriftConfig
from server.monitoring.monitor import DriftMonitor

MODEL = "fraud"


def record_cost_us(manifest: ModelManifest, batch_sizes: list[int], calls: int = 20_000) -> dict[int, float]:
    """Microseconds per `record()` of a batch, by batch size (the request path's share of drift)."""
    drift = DriftMonitor(DriftConfig()).track(manifest)
    assert drift is not None, "the model has no drift reference"
    assert drift.plan.feature_input is not None and drift.plan.prediction_output is not None
    out = {}
    for rows in batch_sizes:
        inputs = {drift.plan.feature_input: example_rows(manifest, rows)}
        outputs = {drift.plan.prediction_output: np.random.default_rng(0).random((rows, 1), dtype=np.float32)}
        started = time.perf_counter()
        for _ in range(calls):
            drift.record(inputs, outputs)
        out[rows] = (time.perf_counter() - started) / calls * 1e6
    return out


def compute_cost_ms(manifest: ModelManifest, repeats: int = 20) -> float:
    """Milliseconds of one `compute()` over a full default window (off the request path)."""
    drift = DriftMonitor(DriftConfig()).track(manifest)
    assert drift is not None and drift.plan.feature_input and drift.plan.prediction_output
    rows = drift.window.capacity
    drift.record(
        {drift.plan.feature_input: example_rows(manifest, rows)},
        {drift.plan.prediction_output: np.random.default_rng(0).random((rows, 1), dtype=np.float32)},
    )
    started = time.perf_counter()
    for _ in range(repeats):
        drift.compute()
    return (time.perf_counter() - started) / repeats * 1e3


@contextlib.contextmanager
def _drift_off() -> Iterator[None]:
    """`HOTSERVE_DRIFT_ENABLED=false` in the environment a server started inside inherits."""
    before = os.environ.get("HOTSERVE_DRIFT_ENABLED")
    os.environ["HOTSERVE_DRIFT_ENABLED"] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HOTSERVE_DRIFT_ENABLED"]
        else:
            os.environ["HOTSERVE_DRIFT_ENABLED"] = before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=RESULTS / "repository")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    prepare_repository(args.repository, [MODEL])
    version_dir = latest_version_dir(args.repository, MODEL)
    manifest = ModelManifest.read(version_dir)

    record_us = record_cost_us(manifest, [1, 16, 64])
    compute_ms = compute_cost_ms(manifest)
    print("record() per batch: " + ", ".join(f"{rows} rows {us:.1f} us" for rows, us in record_us.items()))
    print(f"compute() over a full window of {DriftConfig().window_rows} rows: {compute_ms:.1f} ms")

    results: list[LoadResult] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(args.repository, RESULTS / "server-drift-on.log") as on,
        _drift_off(),
        serving(args.repository, RESULTS / "server-drift-off.log") as off,
    ):
        results = measure(
            {"drift on": on.base_url, "drift off": off.base_url},
            manifest,
            ["json"],
            [int(c) for c in args.clients.split(",")],
            args.duration,
            Path(tmp),
        )
    lines = []
    for clients in sorted({r.clients for r in results}):
        with_drift = next(r for r in results if r.clients == clients and r.mode == "drift on")
        without = next(r for r in results if r.clients == clients and r.mode == "drift off")
        lines.append(
            f"- {clients} clients: {with_drift.requests_per_s:.0f} req/s with drift, "
            f"{without.requests_per_s:.0f} without ({with_drift.requests_per_s / without.requests_per_s - 1:+.1%}); "
            f"p50 {with_drift.p50_ms:.2f} vs {without.p50_ms:.2f} ms, p99 {with_drift.p99_ms:.2f} vs "
            f"{without.p99_ms:.2f} ms; mean batch {with_drift.mean_batch_rows:.1f} vs {without.mean_batch_rows:.1f}"
        )
    print("\n".join(lines))
    (RESULTS / "drift_cost.json").write_text(
        json.dumps(
            {
                "record_us_by_batch_rows": record_us,
                "compute_ms_full_window": compute_ms,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

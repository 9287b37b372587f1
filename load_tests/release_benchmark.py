"""The primary's latency while a release runs, against the same traffic before it.

    python -m load_tests.release_benchmark                      # 3 releases, 6 s steps, 8 connections
    python -m load_tests.release_benchmark --step-s 5 --rounds 1

One server (no Redis: the release record in a file, the one replica drives), the shadow
benchmark's repository (`fast` v1 and v2: the same small MLP, v2 nudged by 1e-3). Each round wrk
sends one-row v2 JSON to `fast`'s unpinned route for `--step-s` seconds with no release
(`before`), then `hotserve`'s release of the other version runs its schedule (shadow at share 1.0,
canary 25%, canary 50%, each baked `--step-s`) while wrk keeps sending, window after window,
each window labelled by the step the release was in when it ended. The next round releases the
version back. wrk is closed-loop at `--clients` connections, kept below saturation by default so
the figures are what a client at normal load sees, not queueing. Needs wrk and the `train` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from load_tests.benchmark import RESULTS, run_wrk, wrk_errors, wrk_rate
from load_tests.server_process import start_server
from load_tests.shadow_benchmark import FEATURES, MODEL, TOKEN, admin, write_repository
from server.contract.aliases import PRODUCTION


@dataclass
class Window:
    round: int
    phase: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def policy(step_s: float) -> dict[str, Any]:
    return {
        "shadow_share": 1.0,
        "shadow_bake_s": step_s,
        "canary_weights": [25, 50],
        "canary_bake_s": step_s,
        "deadline_s": 20 * step_s,
        "gates": {"min_requests": 200, "min_latency_samples": 200, "tolerance": 0.01, "max_p99_ratio": 2.0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-s", type=float, default=6.0, help="bake time of each step, and each window's length")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    row = np.random.default_rng(0).normal(size=FEATURES).round(4).tolist()
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": row}]}).encode()
    windows: list[Window] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_repository(work / "repository")
        server = start_server(
            work / "repository",
            RESULTS / "server-release.log",
            env={
                "HOTSERVE_ADMIN_TOKENS": f"bench:{TOKEN}",
                "HOTSERVE_LOG_LEVEL": "warning",
                "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
                "HOTSERVE_EVIDENCE_BUCKET_S": "1",
                "HOTSERVE_RELEASE_TICK_S": "0.5",
            },
            startup_timeout_s=120,
        )
        try:
            url = server.base_url
            admin(url, "PUT", f"/admin/models/{MODEL}/aliases/{PRODUCTION}", {"version": 1})
            infer = f"{url}/v2/models/{MODEL}/infer"
            seconds = max(1, round(args.step_s))

            def window(round_: int, phase: str) -> None:
                w = run_wrk(infer, body, "application/json", None, args.clients, seconds, work)
                errors = wrk_errors(w)
                windows.append(
                    Window(
                        round_,
                        phase,
                        wrk_rate(w),
                        w["p50_us"] / 1000,
                        w["p99_us"] / 1000,
                        errors,
                    )
                )
                print(json.dumps(asdict(windows[-1])), flush=True)

            run_wrk(infer, body, "application/json", None, args.clients, 2, work)  # warm up
            for round_ in range(1, args.rounds + 1):
                candidate = 2 if round_ % 2 else 1
                window(round_, "before")
                admin(url, "POST", f"/admin/models/{MODEL}/releases", {"version": candidate, "policy": policy(seconds)})
                while True:
                    window(round_, "release")
                    status = admin(url, "GET", f"/admin/models/{MODEL}/releases/current")
                    windows[-1].phase = status["current_step"] or status["state"]
                    if status["state"] != "running":
                        verdicts.append(status["state"])
                        break
        finally:
            server.stop()
    print(f"\nverdicts: {verdicts}")
    print("phase            req/s   p50 ms  p99 ms  errors  (median of windows)")
    for name in dict.fromkeys(w.phase for w in windows):
        rows = [w for w in windows if w.phase == name]
        print(
            f"{name:14s} {statistics.median(w.requests_per_s for w in rows):7.0f} "
            f"{statistics.median(w.p50_ms for w in rows):7.2f} {statistics.median(w.p99_ms for w in rows):7.2f} "
            f"{sum(w.errors for w in rows):7d}"
        )
    (RESULTS / "release_benchmark.json").write_text(json.dumps([asdict(w) for w in windows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

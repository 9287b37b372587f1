"""Shadow traffic under load: the primary's latency with a shadow copying every request vs none.

    python -m load_tests.shadow_benchmark                       # 8 s per phase, 64 connections
    python -m load_tests.shadow_benchmark --duration 5 --rounds 3

One server, one repository: `fast` v1 and v2 (the same small MLP, 16 -> 64 -> 1; v2's weights
differ slightly, so agreement depends on the tolerance) and `fast` v3, a heavy version (3 x
2048-wide layers, ~2000x the work per row) that cannot keep up with the traffic. wrk sends v2 JSON
(one row) to `fast`'s unpinned route in alternating phases, `--rounds` times:
  none         no shadow;
  shadow       v2 shadows v1 at share 1.0 (every request copied after the answer, unless the
               primary has requests waiting or the shadow took over half the inference time:
               copies yield to it, the default);
  shadow eager the same on a second server started with HOTSERVE_SHADOW_YIELD_TO_PRIMARY=false
               and HOTSERVE_SHADOW_MAX_INFERENCE_SHARE=1 (every drawn copy is sent, up to
               HOTSERVE_SHADOW_MAX_PENDING);
  shadow 20%   v2 at share 0.2;
  slow shadow  v3 shadows v1 at share 1.0: its queue fills, copies are dropped and counted.
The phases' order rotates between rounds. `--phases` runs a subset, e.g. `--phases none,shadow` for the 100% shadow against none alone (the
eager server is started only for `shadow eager`).
The primary's p50/p99 and throughput per phase, and per shadow phase the copies compared,
dropped and failed and the agreement (from the server's metrics). Then, open loop
(`load_tests/open_loop.py`) at `--open-loop` (default 0.5) of capacity (the rate that keeps the
event loop busy that share of the time with no shadow, `calibrate`): `none` and `shadow` again,
alternated, `--rounds` times, for the latency a user at that load sees. Needs wrk, a C compiler and the `train` extra (onnx).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from load_tests.benchmark import RESULTS, run_wrk, wrk_errors, wrk_rate
from load_tests.open_loop import calibrate, run_open_loop
from load_tests.server_process import start_server
from server.admin_client import AdminClient
from server.contract.aliases import PRODUCTION
from server.contract.manifest import ONNX_FILENAME, BatchingPolicy, Lineage, ModelManifest, TensorSpec, sha256_file

MODEL = "fast"
FEATURES = 16
TOKEN = "shadow-benchmark-admin-token"
OUTCOMES = ("compared", "dropped", "failed")
PHASES: dict[str, tuple[int | None, float]] = {
    "none": (None, 1.0),
    "shadow": (2, 1.0),
    "shadow eager": (2, 1.0),
    "shadow 20%": (2, 0.2),
    "slow shadow": (3, 1.0),
}
"""Closed-loop phases: the shadow version (None: no shadow) and its share."""


@dataclass
class Phase:
    round: int
    phase: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    compared: int
    dropped: int
    failed: int
    agreement: float | None


def mlp(seed: int, layers: list[int]) -> onnx.ModelProto:
    """x [n, FEATURES] -> relu layers -> y [n, 1]."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, width = [], [], "x", FEATURES
    for i, size in enumerate([*layers, 1]):
        w = (rng.normal(size=(width, size)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == len(layers) else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out if i == len(layers) else f"m{i}"]))
        if i < len(layers):
            nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev, width = out, size
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_repository(root: Path) -> None:
    for version, (seed, layers) in {1: (1, [64]), 2: (1, [64]), 3: (3, [2048, 2048, 2048])}.items():
        folder = root / MODEL / str(version)
        folder.mkdir(parents=True)
        model = mlp(seed, layers)
        if version == 2:  # the same network, nudged: answers differ by ~1e-3
            weights = model.graph.initializer[0]
            array = numpy_helper.to_array(weights) * np.float32(1.001)
            weights.CopyFrom(numpy_helper.from_array(array, weights.name))
        onnx.save(model, folder / ONNX_FILENAME)
        ModelManifest(
            name=MODEL,
            version=version,
            inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, FEATURES])],
            outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 1])],
            batching=BatchingPolicy(max_batch_size=64, max_queue_size=256),
            lineage=Lineage(architecture="mlp"),
            onnx_sha256=sha256_file(folder / ONNX_FILENAME),
        ).write(folder)


def admin(url: str, method: str, path: str, body: Any = None) -> Any:
    return AdminClient(url, TOKEN, timeout_s=120).call(method, path, body)


def shadow_counts(url: str, version: int) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {name: 0.0 for name in (*OUTCOMES, "agree")}
    for line in text.splitlines():
        match = re.match(r"hotserve_shadow_(requests|agreements)_total\{([^}]*)\} (\S+)", line)
        if not match or f'version="{version}"' not in match.group(2):
            continue
        label = re.search(r'(?:outcome|result)="(\w+)"', match.group(2))
        if label and label.group(1) in counts:
            counts[label.group(1)] += float(match.group(3))
    return counts


def set_shadow(url: str, version: int | None, share: float, tolerance: float) -> None:
    if version is None:
        admin(url, "DELETE", f"/admin/models/{MODEL}/shadow")
    else:
        admin(url, "PUT", f"/admin/models/{MODEL}/shadow", {"version": version, "share": share, "tolerance": tolerance})


def open_loop_phase(
    url: str, shadow: int | None, rate: float, body: bytes, args: argparse.Namespace, round_: int, work: Path
) -> Phase:
    """`none open` or `shadow open` (v2 at share 1.0): requests at `rate` per second, open loop."""
    set_shadow(url, shadow, 1.0, args.tolerance)
    before = shadow_counts(url, shadow or 0)
    result = run_open_loop(
        f"{url}/v2/models/{MODEL}/infer", body, "application/json", None, rate, args.duration, work / "open"
    )
    time.sleep(0.5)  # let queued copies finish before reading the counters
    after = shadow_counts(url, shadow or 0)
    delta = {k: int(after[k] - before[k]) for k in after}
    return Phase(
        round_,
        "none open" if shadow is None else "shadow open",
        result.requests_per_s,
        result.p50_ms,
        result.p99_ms,
        result.failed + result.unanswered,
        delta["compared"],
        delta["dropped"],
        delta["failed"],
        delta["agree"] / delta["compared"] if delta["compared"] else None,
    )


def paired_ratios(phases: list[Phase]) -> list[str]:
    """Each shadow phase against `none` in the same round, then the median over rounds: the
    machine's speed drifts between rounds, so medians per phase would compare different speeds."""
    rounds = sorted({p.round for p in phases})
    found = {(p.round, p.phase): p for p in phases}
    lines = []
    for name, baseline, field, label in [
        ("shadow", "none", "requests_per_s", "throughput"),
        ("shadow eager", "none", "requests_per_s", "throughput"),
        ("shadow 20%", "none", "requests_per_s", "throughput"),
        ("slow shadow", "none", "requests_per_s", "throughput"),
        ("shadow open", "none open", "p99_ms", "p99"),
    ]:
        ratios = [
            getattr(found[r, name], field) / getattr(found[r, baseline], field)
            for r in rounds
            if (r, name) in found and (r, baseline) in found and getattr(found[r, baseline], field)
        ]
        if ratios:
            each = ", ".join(f"{x:.3f}" for x in ratios)
            lines.append(
                f"{name:12s} {label} / {baseline} in the same round: median {statistics.median(ratios):.3f} ({each})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.01, help="agreement tolerance of the shadow")
    parser.add_argument("--open-loop", type=float, default=0.5, help="fraction of capacity offered open loop (0: none)")
    parser.add_argument("--phases", default=",".join(PHASES), help="closed-loop phases to run, comma-separated")
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.phases.split(",") if name.strip()]
    if not selected or set(selected) - set(PHASES):
        parser.error(f"--phases: a comma-separated subset of {','.join(PHASES)}")
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
        servers = {}
        try:
            kinds = [("yielding", "true", "0.5")] + [("eager", "false", "1")] * ("shadow eager" in selected)
            for kind, yields, ceiling in kinds:
                servers[kind] = start_server(
                    work / "repository",
                    RESULTS / f"server-shadow-{kind}.log",
                    env={
                        "HOTSERVE_ADMIN_TOKENS": f"bench:{TOKEN}",
                        "HOTSERVE_LOG_LEVEL": "warning",
                        "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
                        "HOTSERVE_SHADOW_YIELD_TO_PRIMARY": yields,
                        "HOTSERVE_SHADOW_MAX_INFERENCE_SHARE": ceiling,
                        "HOTSERVE_CONTROL_STATE_PATH": str(work / f"control-{kind}.json"),
                    },
                    startup_timeout_s=120,
                )
            for server in servers.values():
                admin(server.base_url, "PUT", f"/admin/models/{MODEL}/aliases/{PRODUCTION}", {"version": 1})
                for version in (2, 3):
                    admin(server.base_url, "POST", f"/admin/models/{MODEL}/versions/{version}/load")
                infer = f"{server.base_url}/v2/models/{MODEL}/infer"
                run_wrk(infer, body, "application/json", None, 8, 2, work)  # warm up
            for round_ in range(1, args.rounds + 1):
                turn = (round_ - 1) % len(selected)  # the order rotates between rounds
                for phase in selected[turn:] + selected[:turn]:
                    shadow, share = PHASES[phase]
                    url = servers["eager" if phase == "shadow eager" else "yielding"].base_url
                    infer = f"{url}/v2/models/{MODEL}/infer"
                    set_shadow(url, shadow, share, args.tolerance)
                    before = shadow_counts(url, shadow or 0)
                    w = run_wrk(infer, body, "application/json", None, args.clients, args.duration, work)
                    time.sleep(0.5)  # let queued copies finish before reading the counters
                    after = shadow_counts(url, shadow or 0)
                    delta = {k: int(after[k] - before[k]) for k in after}
                    errors = wrk_errors(w)
                    phases.append(
                        Phase(
                            round_,
                            phase,
                            wrk_rate(w),
                            w["p50_us"] / 1000,
                            w["p99_us"] / 1000,
                            errors,
                            delta["compared"],
                            delta["dropped"],
                            delta["failed"],
                            delta["agree"] / delta["compared"] if delta["compared"] else None,
                        )
                    )
                    print(json.dumps(asdict(phases[-1])), flush=True)
            if args.open_loop > 0:
                url = servers["yielding"].base_url
                set_shadow(url, None, 1.0, args.tolerance)
                baseline = "none" if "none" in selected else selected[0]  # capacity with no shadow, where run
                closed = statistics.median(p.requests_per_s for p in phases if p.phase == baseline)
                found = calibrate(
                    f"{url}/v2/models/{MODEL}/infer",
                    body,
                    "application/json",
                    servers["yielding"].process.pid,
                    args.open_loop,
                    closed * args.open_loop / 2,
                    work / "open",
                )
                rate = found.rate
                steps = ", ".join(f"{r:.0f}/s -> {busy:.0%}" for r, busy in found.steps)
                print(f"open loop: event loop busy {args.open_loop:.0%} at ~{rate:.0f} req/s ({steps})", flush=True)
                for round_ in range(1, args.rounds + 1):
                    for shadow in (None, 2):
                        phases.append(open_loop_phase(url, shadow, rate, body, args, round_, work))
                        print(json.dumps(asdict(phases[-1])), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    print(
        "\nphase         req/s   p50 ms  p99 ms  errors  compared  dropped  agreement  compared/s  (median of rounds)"
    )
    for name in ("none", "shadow", "shadow eager", "shadow 20%", "slow shadow", "none open", "shadow open"):
        rows = [p for p in phases if p.phase == name]
        if not rows:
            continue
        agreement = [p.agreement for p in rows if p.agreement is not None]
        print(
            f"{name:12s} {statistics.median(p.requests_per_s for p in rows):7.0f} "
            f"{statistics.median(p.p50_ms for p in rows):7.2f} {statistics.median(p.p99_ms for p in rows):7.2f} "
            f"{sum(p.errors for p in rows):7d} {sum(p.compared for p in rows):9d} {sum(p.dropped for p in rows):8d} "
            f"{statistics.median(agreement) if agreement else float('nan'):10.4f} "
            f"{statistics.median(p.compared for p in rows) / args.duration:10.1f}"
        )
    print()
    for line in paired_ratios(phases):
        print(line)
    (RESULTS / "shadow_benchmark.json").write_text(json.dumps([asdict(p) for p in phases], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

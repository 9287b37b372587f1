"""Real A/A releases: a candidate identical to production, released again and again on two
replicas sharing one Redis under steady load, at the default gates; prints each verdict.

    python -m load_tests.release_aa --releases 20                 # bakes of 5 s, 8 connections per replica
    python -m load_tests.release_aa --releases 3 --bake-s 5 --clients 4

Two `hotserve serve` replicas (each its own copy of the repository: `fast` v1 and v2, the same
16 -> 64 -> 1 MLP written twice from one seed, so they answer identically, with a drift reference
of its outputs so PSI is judged), a private Redis
(control state and releases, signed), 1 s evidence buckets. One wrk per replica sends one-row v2
JSON (1,000 different rows in turn) to `fast`'s unpinned route at `--clients` connections for the whole run. Release after
release, the version not serving is released with the default policy, only its bake times set to
`--bake-s` (and `deadline_s` to `--deadline-s`), so each promotion swaps production for its twin.
Every release's verdict, its duration and, when not promoted, the failing gates are printed; the
exit code is 0 when every release was promoted. Needs wrk, redis-server and the `train` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort

from load_tests.benchmark import LUA_SCRIPT
from load_tests.server_process import ServerProcess, start_server
from load_tests.shadow_benchmark import FEATURES, MODEL, mlp
from load_tests.soak import SIGNING_KEY, private_redis
from server.contract.aliases import PRODUCTION
from server.contract.manifest import ONNX_FILENAME, BatchingPolicy, Lineage, ModelManifest, TensorSpec, sha256_file
from training.reference_stats import drift_reference, histogram

TOKEN = "release-aa-admin-token-0123456789"
POLL_S = 0.5


def write_twins(root: Path, rows: np.ndarray) -> None:
    """`fast` v1 and v2: one network, written twice, with a drift reference binned on its outputs
    for `rows` (so the PSI gate is judged too)."""
    model = mlp(1, [64])
    outputs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": rows}
    )[0]
    columns = [f"x{i}" for i in range(FEATURES)]
    drift = drift_reference(rows, columns, (histogram("y", outputs), "y"))
    for version in (1, 2):
        folder = root / MODEL / str(version)
        folder.mkdir(parents=True)
        onnx.save(model, folder / ONNX_FILENAME)
        ModelManifest(
            name=MODEL,
            version=version,
            inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, FEATURES])],
            outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 1])],
            batching=BatchingPolicy(max_batch_size=64, max_queue_size=256),
            lineage=Lineage(architecture="mlp"),
            onnx_sha256=sha256_file(folder / ONNX_FILENAME),
            drift=drift,
        ).write(folder)


def admin(url: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--bake-s", type=float, default=5.0)
    parser.add_argument("--deadline-s", type=float, default=600.0)
    parser.add_argument("--clients", type=int, default=8, help="wrk connections per replica")
    args = parser.parse_args(argv)
    policy = {"shadow_bake_s": args.bake_s, "canary_bake_s": args.bake_s, "deadline_s": args.deadline_s}
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hotserve-release-aa-") as tmp, private_redis(Path(tmp)) as redis_url:
        if redis_url is None:
            raise SystemExit("redis-server not found")
        work = Path(tmp)
        rows = np.random.default_rng(0).normal(size=(2000, FEATURES)).astype(np.float32).round(4)
        write_twins(work / "repository", rows)
        bodies = [
            json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": row.tolist()}]})
            for row in rows[:1000]
        ]
        (work / "bodies.jsonl").write_text("\n".join(bodies) + "\n")
        replicas: list[ServerProcess] = []
        loads: list[subprocess.Popen[bytes]] = []
        try:
            for name in ("replica-a", "replica-b"):
                shutil.copytree(work / "repository", work / name)
                env = {
                    "HOTSERVE_REDIS_URL": redis_url,
                    "HOTSERVE_CONTROL_SIGNING_KEY": SIGNING_KEY,
                    "HOTSERVE_ADMIN_TOKENS": f"aa:{TOKEN}",
                    "HOTSERVE_REPLICA_ID": name,
                    "HOTSERVE_AUDIT_LOG_PATH": str(work / f"{name}-audit.jsonl"),
                    "HOTSERVE_EVIDENCE_BUCKET_S": "1",
                    "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
                    "HOTSERVE_LOG_LEVEL": "warning",
                }
                replicas.append(start_server(work / name, work / f"{name}.log", env=env, startup_timeout_s=120))
            url = replicas[0].base_url
            admin(url, "PUT", f"/admin/models/{MODEL}/aliases/{PRODUCTION}", {"version": 1})
            wrk_env = {**os.environ, "WRK_BODIES": str(work / "bodies.jsonl"), "WRK_CONTENT_TYPE": "application/json"}
            for replica in replicas:
                loads.append(
                    subprocess.Popen(
                        ["wrk", "-t1", f"-c{args.clients}", "-d3600s", "--timeout", "10s", "-s", str(LUA_SCRIPT)]
                        + [f"{replica.base_url}/v2/models/{MODEL}/infer"],
                        env=wrk_env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            production = 1
            for index in range(1, args.releases + 1):
                candidate = 3 - production
                started = time.monotonic()
                admin(url, "POST", f"/admin/models/{MODEL}/releases", {"version": candidate, "policy": policy})
                while (status := admin(url, "GET", f"/admin/models/{MODEL}/releases/current"))["state"] == "running":
                    time.sleep(POLL_S)
                seconds = time.monotonic() - started
                verdicts.append(status["state"])
                gates = (status.get("last_decision") or {}).get("gates", [])
                failed = [f"{g['gate']}: {g['detail']}" for g in gates if g["verdict"] != "pass"]
                print(f"release {index}: v{candidate} {status['state']} after {seconds:.0f} s", flush=True)
                for line in failed if status["state"] != "promoted" else []:
                    print(f"    {line}", flush=True)
                if status["state"] == "promoted":
                    production = candidate
                # Both replicas route by the new production before the next release starts.
                for replica in replicas:
                    while admin(replica.base_url, "GET", f"/admin/models/{MODEL}")["aliases"][PRODUCTION] != production:
                        time.sleep(POLL_S)
        finally:
            for load in loads:
                load.terminate()
                load.wait(timeout=30)
            for replica in replicas:
                replica.stop()
    promoted = verdicts.count("promoted")
    print(f"\n{promoted} of {len(verdicts)} A/A releases promoted: {verdicts}")
    return 0 if promoted == len(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())

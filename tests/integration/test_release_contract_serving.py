"""The issue's release, end to end: a candidate that lost its feature spec (as an import through
the MLflow registry once did) answers 400 to every v1 record. `hotserve release` refuses to start
it, naming the difference; forced, it is rolled back at the first canary step by the error gate at
its default bounds (only the bake times shortened), because a 4xx production does not give on the
same route is an error. One real `hotserve serve` with a Redis of the test's own (the evidence goes
through the fleet's store), real onnxruntime, mixed v1 and v2 traffic from client threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fraud_scorer import COLUMNS, fraud_rows
from load_tests.server_process import REPO_ROOT, ServerProcess, start_server
from redis_process import start_redis
from server.contract.manifest import ModelManifest
from test_release import VERDICT_TIMEOUT_S, write_scorer

pytestmark = pytest.mark.integration

TOKEN = "release-contract-token-0123456789"
POLICY = {"shadow_bake_s": 1.0, "canary_bake_s": 1.0}
"""The default policy and gates, the bake times shortened."""


@dataclass
class Traffic:
    server: ServerProcess
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(protocol, status) -> count."""


@pytest.fixture
def traffic(tmp_path: Path) -> Iterator[Traffic]:
    """Production v1 (records carry every column), candidate v2: the same scorer, its model.json
    without the feature spec; three v1 records to one v2 request, from two client threads."""
    repository = tmp_path / "repository"
    write_scorer(repository, 1, -3.0)
    write_scorer(repository, 2, -3.0)
    lost = ModelManifest.read(repository / "fraud" / "2").model_copy(update={"features": None})
    lost.write(repository / "fraud" / "2")
    redis_server = start_redis()
    env = {
        "HOTSERVE_REDIS_URL": redis_server.url(),
        "HOTSERVE_ADMIN_TOKENS": f"ci:{TOKEN}",
        "HOTSERVE_AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl"),
        "HOTSERVE_EVIDENCE_BUCKET_S": "0.5",
        "HOTSERVE_RELEASE_TICK_S": "0.25",
        "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
        "HOTSERVE_INTRA_OP_THREADS": "1",
    }
    stop = threading.Event()
    try:
        with start_server(repository, tmp_path / "server.log", env=env) as server:
            promoted = httpx.post(
                f"{server.base_url}/admin/models/fraud/promote",
                json={"version": 1},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            )
            assert promoted.status_code == 200, promoted.text
            out = Traffic(server)
            rows = fraud_rows(seed=7, rows=2000)

            def send(offset: int) -> None:
                with httpx.Client(base_url=server.base_url, timeout=30) as client:
                    index = offset
                    while not stop.is_set():
                        row = rows[index % len(rows)]
                        index += 1
                        if index % 4:
                            protocol, path = "v1", "/v1/models/fraud:predict"
                            body = {"instances": [dict(zip(COLUMNS, row.tolist(), strict=True))]}
                        else:
                            protocol, path = "v2", "/v2/models/fraud/infer"
                            body = {
                                "inputs": [
                                    {"name": "features", "datatype": "FP32", "shape": [1, 9], "data": row.tolist()}
                                ]
                            }
                        out.answers[(protocol, client.post(path, json=body).status_code)] += 1

            threads = [threading.Thread(target=send, args=(offset,), daemon=True) for offset in (0, 1000)]
            for thread in threads:
                thread.start()
            try:
                yield out
            finally:  # the clients stop before the server does
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
    finally:
        redis_server.stop()


def release(server: ServerProcess, *flags: str) -> tuple[int, str]:
    """`hotserve release fraud 2 --policy FILE --wait FLAGS`: exit code and output."""
    policy = Path(server.log_path).parent / "policy.yaml"
    policy.write_text(json.dumps(POLICY))  # JSON is YAML
    env = {**os.environ, "HOTSERVE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "release", "fraud", "2", "--policy", str(policy), "--wait"]
        + ["--poll-s", "0.2", "--url", server.base_url, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=VERDICT_TIMEOUT_S,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_candidate_refusing_v1_records_is_refused_at_start_and_forced_is_rolled_back(traffic: Traffic) -> None:
    server = traffic.server
    headers = {"Authorization": f"Bearer {TOKEN}"}
    code, output = release(server)
    print(output)
    assert code == 3, output
    assert "version 2 cannot answer what production answers:" in output
    assert "  - features: production answers v1 records" in output and "--force" in output
    assert httpx.get(f"{server.base_url}/admin/models/fraud/releases/current", headers=headers).status_code == 404

    code, output = release(server, "--force")
    print(output)
    assert code == 1, output
    assert "forced past: features: production answers v1 records" in output
    status = httpx.get(f"{server.base_url}/admin/models/fraud/releases/current", headers=headers).json()
    assert status["state"] == "rolled_back" and status["current_step"] is None, status
    assert [r["step"]["kind"] for r in status["history"]] == ["shadow"], status  # copies never exercise v1
    failed = {g["gate"]: g for g in status["last_decision"]["gates"] if g["verdict"] == "fail"}
    assert "error_rate" in failed, status["last_decision"]
    model = httpx.get(f"{server.base_url}/admin/models/fraud", headers=headers).json()
    assert model["aliases"]["production"] == 1 and model["traffic"] == {} and model["shadow"] is None
    # What the clients saw: some v1 records refused while the canary ran, never a v2 request.
    assert traffic.answers[("v1", 400)] > 0 and set(traffic.answers) <= {("v1", 200), ("v1", 400), ("v2", 200)}

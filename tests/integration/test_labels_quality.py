"""Labels and live quality across a fleet: two real `hotserve serve` replicas on one real Redis.

Replica A answers traffic and captures it (its writer feeds the served index in Redis); labels
are posted to replica B, which never saw those requests. Both replicas then report the same
live figures in the admin API and in /metrics, and the live AUC equals an offline computation on
the rows A captured to Parquet, joined to the same labels. With Redis stopped, label intake
answers 503 and the replica goes on serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.dataset as ds
import pytest

from load_tests.server_process import ServerProcess
from onnx_models import tabular_model, write_version
from redis_process import RedisProcess, start_redis
from server.contract.manifest import ModelManifest, PredictionContract

pytestmark = pytest.mark.integration

TOKEN = "labels-test-token-0123456789"
REQUESTS = 300
POLL_TIMEOUT_S = 60.0


def _poll(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _write_graded(repository: Path) -> None:
    folder = write_version(
        repository, "graded", 1, tabular_model(seed=7), [("features", "FP32", [-1, 4])], [("score", "FP32", [-1, 1])]
    )
    manifest = ModelManifest.read(folder)
    manifest.model_copy(update={"prediction": PredictionContract(task="binary", output="score")}).write(folder)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    process = start_redis()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def fleet(
    serve_with: Callable[..., ServerProcess], redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ServerProcess, ServerProcess, Path]:
    root = tmp_path_factory.mktemp("labels")
    repository = root / "repository"
    _write_graded(repository)
    common = {
        "HOTSERVE_REDIS_URL": redis_server.url(3),
        "HOTSERVE_CONTROL_KEY_PREFIX": f"labels-test-{os.getpid()}",
        "HOTSERVE_ADMIN_TOKEN": TOKEN,
        "HOTSERVE_QUALITY_REFRESH_S": "0.2",
        "HOTSERVE_CAPTURE_ROTATE_AGE_S": "0.5",
        "HOTSERVE_REDIS_TIMEOUT_MS": "500",
    }
    a = serve_with(repository, {**common, "HOTSERVE_CAPTURE_SINK": str(root / "capture-a")})
    b = serve_with(repository, {**common, "HOTSERVE_CAPTURE_SINK": str(root / "capture-b")})
    return a, b, root / "capture-a"


def _traffic(base_url: str) -> dict[str, float]:
    """REQUESTS single-row v2 requests with our own request ids; the true labels drawn from the
    score itself (a calibrated model), seeded."""
    rng = np.random.default_rng(0)
    labels: dict[str, float] = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(REQUESTS):
            features = rng.normal(size=4).astype(np.float32)
            rid = f"req-{i}"
            answer = client.post(
                "/v2/models/graded/infer",
                json={"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": features.tolist()}]},
                headers={"x-request-id": rid},
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-request-id"] == rid
            score = answer.json()["outputs"][0]["data"][0]
            labels[rid] = float(rng.random() < score)
    return labels


def _post(base_url: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(
        f"{base_url}/v2/models/graded/labels",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
        timeout=30,
    )


def _brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return float(wins / (positive.size * negative.size))


def _metric(base_url: str, series: str) -> float | None:
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_labels_posted_at_another_replica_give_the_same_fleet_quality_as_offline(
    fleet: tuple[ServerProcess, ServerProcess, Path], tmp_path: Path
) -> None:
    a, b, capture_a = fleet
    truth = _traffic(a.base_url)
    lines = "\n".join(f'{{"request_id": "{rid}", "label": {int(y)}}}' for rid, y in truth.items()).encode()

    # The writer indexes captured rows off the loop: post (idempotent) until every id is known.
    def joined() -> dict[str, Any] | None:
        answer = _post(b.base_url, lines, "application/x-ndjson")
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        return doc if doc["unknown"] == 0 else None

    last = _poll(joined, "every request id to be indexed")
    assert last["received"] == REQUESTS and last["joined"] + last["duplicates"] == REQUESTS

    # A duplicate batch changes nothing: the same (request id, row) counts once.
    again = _post(b.base_url, lines, "application/x-ndjson").json()
    assert (again["joined"], again["duplicates"]) == (0, REQUESTS)

    # Offline: the rows A captured to Parquet, joined to the labels.
    def captured() -> Any:
        if not capture_a.exists():
            return None
        table = ds.dataset(capture_a / "graded", format="parquet", partitioning="hive").to_table()
        return table if table.num_rows >= REQUESTS else None

    table = _poll(captured, "A's capture files")
    ids = table.column("request_id").to_pylist()
    scores = np.asarray(table.column("out.score").to_pylist(), dtype=np.float64)
    labels = np.asarray([truth[rid] for rid in ids])
    offline = _brute_force_auc(scores, labels)

    def reported(base_url: str) -> dict[str, Any] | None:
        answer = httpx.get(
            f"{base_url}/admin/models/graded/quality", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        versions = answer.json()["versions"]
        return versions[0] if versions and versions[0]["total"]["labels"] == REQUESTS else None

    from_a, from_b = _poll(lambda: reported(a.base_url), "A's report"), _poll(lambda: reported(b.base_url), "B's")
    for figure in ("labels", "metrics", "estimate_error"):  # (each report's interval ends at its own now)
        assert from_a["total"][figure] == from_b["total"][figure]
    assert abs(from_b["total"]["metrics"]["auc"] - offline) < 1e-3
    assert from_b["total"]["metrics"]["observed_positive_rate"] == pytest.approx(labels.mean())
    assert sum(w["labels"] for w in from_b["windows"]) == REQUESTS
    assert from_a["estimate"]["rows"] == REQUESTS and "auc" in from_a["estimate"]["metrics"]  # A served them

    # /metrics of both replicas: the same fleet figure, its label count, the training reference.
    auc = 'hotserve_quality{metric="auc",model="graded",version="1"}'
    for replica in (a, b):
        value = _poll(lambda r=replica: _metric(r.base_url, auc), f"{replica.base_url} {auc}")
        assert abs(value - offline) < 1e-3
        assert _metric(replica.base_url, 'hotserve_quality_labels{model="graded",version="1"}') == REQUESTS
        assert _metric(replica.base_url, 'hotserve_quality_reference{metric="auc",model="graded",version="1"}') == 0.51

    # The command line over HTTP: a CSV file, against B.
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(
        "request_id,row,label\n" + "".join(f"{rid},0,{int(y)}\n" for rid, y in list(truth.items())[:5]) + "nope,0,1\n"
    )
    cli = subprocess.run(
        [sys.executable, "-m", "server.cli", "labels", "graded", str(csv_file), "--url", b.base_url, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOTSERVE_ADMIN_TOKEN": TOKEN},
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert '"duplicates": 5' in cli.stdout and '"unknown": 1' in cli.stdout


def test_bad_labels_are_refused_naming_them_and_unauthenticated_calls_are_401(
    fleet: tuple[ServerProcess, ServerProcess, Path],
) -> None:
    _, b, _ = fleet
    refused = _post(b.base_url, b'[{"request_id": "x1", "label": 1}, {"request_id": "x2", "label": 3}]')
    assert refused.status_code == 400 and "'x2'" in refused.json()["error"]
    assert refused.json()["refused"] == [{"request_id": "x2", "row": 0, "problem": "a binary label is 0 or 1, got 3"}]
    nan = _post(b.base_url, b"request_id,label\nx3,nan\n", "text/csv")
    assert nan.status_code == 400 and "'x3'" in nan.json()["error"]
    anonymous = httpx.post(f"{b.base_url}/v2/models/graded/labels", content=b"[]", timeout=10)
    assert anonymous.status_code == 401


def test_with_redis_down_label_intake_is_503_and_serving_goes_on(
    fleet: tuple[ServerProcess, ServerProcess, Path], redis_server: RedisProcess
) -> None:
    _, b, _ = fleet
    redis_server.stop()
    try:
        answer = _post(b.base_url, b'[{"request_id": "req-1", "label": 1}]')
        assert answer.status_code == 503 and "Redis" in answer.json()["error"], answer.text
        inference = httpx.post(
            f"{b.base_url}/v2/models/graded/infer",
            json={"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]},
            timeout=30,
        )
        assert inference.status_code == 200, inference.text
    finally:
        redis_server.start()

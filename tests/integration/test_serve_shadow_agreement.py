"""A shadow set with no options on a real `hotserve serve` is compared by what the models' answers
mean: two binary fraud scorers whose scores differ slightly but whose decisions at the recorded
threshold are the same agree near 100%, where the old float tolerance (still there when asked
for) finds almost no agreement. The metadata shows the threshold.

Production is the fraud scorer (bias -3); versions 2 and 3 are the same scorer with bias -2.98,
so every score moves by up to 0.005 and one row in 400 crosses the threshold 0.3. The expected
counts are computed here with onnxruntime on the same rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from onnx import numpy_helper

from fraud_scorer import COLUMNS, REFERENCE_ROWS, fraud_rows, scorer_model
from load_tests.server_process import REPO_ROOT, ServerProcess, start_server
from onnx_models import write_version
from server.contract.manifest import BatchingPolicy, ModelManifest
from server.registry.control_state import ControlSnapshot, ModelControl

pytestmark = pytest.mark.integration

TOKEN = "agreement-token-0123456789"
THRESHOLD = 0.3
ROWS = 400
POLL_TIMEOUT_S = 60.0


def scorer(bias: float) -> onnx.ModelProto:
    reference = fraud_rows(seed=0, rows=REFERENCE_ROWS)
    model = scorer_model(reference.mean(axis=0), reference.std(axis=0))
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == "b":
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.array([bias], np.float32), "b"))
    onnx.checker.check_model(model)
    return model


def write_binary_scorer(repository: Path, version: int, bias: float) -> None:
    """The scorer with `bias`, its model.json recording a binary task decided at `THRESHOLD`."""
    folder = write_version(
        repository,
        "fraud",
        version,
        scorer(bias),
        [("features", "FP32", [-1, len(COLUMNS)])],
        [("score", "FP32", [-1, 1])],
        BatchingPolicy(max_batch_size=64, max_queue_delay_ms=1.0),
    )
    manifest = ModelManifest.read(folder)
    contract = {"task": "binary", "decision_threshold": THRESHOLD}
    ModelManifest.model_validate({**manifest.model_dump(), "prediction": contract}).write(folder)


def local_scores(bias: float, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(scorer(bias).SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"features": rows})[0], dtype=np.float64).ravel()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("agreement")
    repository = root / "repository"
    write_binary_scorer(repository, 1, -3.0)
    write_binary_scorer(repository, 2, -2.98)
    write_binary_scorer(repository, 3, -2.98)
    (repository / ".hotserve").mkdir()
    control = ControlSnapshot(revision=1, models={"fraud": ModelControl(aliases={"production": 1})})
    (repository / ".hotserve" / "control.json").write_text(control.model_dump_json())
    with start_server(
        repository,
        root / "server.log",
        env={
            "HOTSERVE_ADMIN_TOKENS": f"ci:{TOKEN}",
            "HOTSERVE_AUDIT_LOG_PATH": str(root / "audit.jsonl"),
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "HOTSERVE_INTRA_OP_THREADS": "1",
        },
    ) as started:
        yield started


def models_cli(server: ServerProcess, *args: str) -> str:
    """`hotserve models ARGS` against the server, as an operator types it; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "models", "--url", server.base_url, *args],
        env={**os.environ, "HOTSERVE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def evidence(server: ServerProcess, version: int, compared: int) -> dict[str, Any]:
    """The shadow version's evidence once it compared `compared` copies (they run after the answers)."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        found: dict[str, Any] = httpx.get(
            f"{server.base_url}/admin/models/fraud/versions/{version}/evidence",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        if found["shadow_compared"] >= compared:
            return found
        assert time.monotonic() < deadline, f"only {found['shadow_compared']} of {compared} copies compared"
        time.sleep(0.05)


def send_rows(server: ServerProcess, rows: np.ndarray) -> None:
    """One unpinned single-row v2 request per row: each is one comparison."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for row in rows:
            body = {
                "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, len(COLUMNS)], "data": row.tolist()}]
            }
            response = client.post("/v2/models/fraud/infer", content=orjson.dumps(body))
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == "1"


def test_a_shadow_with_no_options_agrees_on_decisions_and_an_explicit_tolerance_still_overrides(
    server: ServerProcess,
) -> None:
    rows = fraud_rows(seed=7, rows=ROWS)
    production, candidate = local_scores(-3.0, rows), local_scores(-2.98, rows)
    difference = np.abs(production - candidate)
    # no row so close to a bound that kernel rounding could move it across
    assert np.abs(production - THRESHOLD).min() > 1e-5 and np.abs(candidate - THRESHOLD).min() > 1e-5
    assert np.abs(difference - 1e-4).min() > 1e-6
    same_decision = int(np.sum((production >= THRESHOLD) == (candidate >= THRESHOLD)))
    within_tolerance = int(np.sum(difference <= 1e-4))
    assert (same_decision, within_tolerance) == (ROWS - 1, 1)  # what the rows are chosen to show

    said = models_cli(server, "shadow", "fraud", "2")
    assert (
        "shadow set for fraud: v2 sees 100% of unpinned requests, "
        "agreement: same decision at threshold 0.3 on 'score' (binary, from model.json)"
    ) in said
    model = httpx.get(f"{server.base_url}/admin/models/fraud", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert model["shadow"] == {"version": 2, "share": 1.0, "tolerance": None, "threshold": None}
    applied = model["routing"]["shadow_agreement"]
    assert (applied["rule"], applied["threshold"], applied["shadow_threshold"], applied["source"]) == (
        "decision",
        THRESHOLD,
        THRESHOLD,
        "model",
    )
    for version in ("1", "2"):  # the shadow is loaded now
        metadata = httpx.get(f"{server.base_url}/v2/models/fraud/versions/{version}").json()
        assert metadata["prediction"] == {
            "task": "binary",
            "output": "score",
            "decision_threshold": THRESHOLD,
            "agreement_tolerance": None,
        }

    send_rows(server, rows)
    by_task = evidence(server, 2, ROWS)
    assert by_task["shadow_compared"] == ROWS
    assert by_task["shadow_agreement"] == pytest.approx(same_decision / ROWS)  # 99.75%

    said = models_cli(server, "shadow", "fraud", "3", "--tolerance", "1e-4")
    assert "agreement: within 0.0001 on 'score' (as the shadow policy asks)" in said
    send_rows(server, rows)
    by_tolerance = evidence(server, 3, ROWS)
    assert by_tolerance["shadow_compared"] == ROWS
    assert by_tolerance["shadow_agreement"] == pytest.approx(within_tolerance / ROWS)  # 0.25%

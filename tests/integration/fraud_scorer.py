"""A small fraud-scoring ONNX model with a real drift reference, and PSI computed apart from the server.

The reference is what training would record: histograms of the demo generator's rows
(`training/datasets/fraud.py`, seed 0) and of the model's scores on them. Live streams are the
same generator with other seeds, optionally with one feature shifted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import orjson
from onnx import TensorProto, helper, numpy_helper

from onnx_models import IR_VERSION, OPSET, write_version
from server.contract.manifest import BatchingPolicy, FeatureSpec, ReferenceHistogram
from server.registry.control_state import ControlSnapshot, ModelControl
from training.datasets.fraud import REQUEST_FEATURES, STORE_FEATURES, generate
from training.reference_stats import drift_reference, prediction_histogram

COLUMNS = REQUEST_FEATURES + STORE_FEATURES
CATEGORICAL = ["merchant_category"]
REFERENCE_ROWS = 20_000
EPSILON = 1e-4
POLL_TIMEOUT_S = 60.0
_WEIGHTS = np.array([[0.8], [0.1], [-0.05], [0.5], [0.3], [0.1], [-0.2], [0.6], [-0.3]], dtype=np.float32)


def fraud_rows(seed: int, rows: int, generated: int = REFERENCE_ROWS) -> np.ndarray:
    """`rows` rows of the demo table (drawn from `generated` generated with `seed`), FP32 [rows, 9]."""
    table = generate(generated, seed=seed)[COLUMNS].to_numpy(np.float64)
    if rows < generated:
        table = table[np.random.default_rng(seed).choice(generated, rows, replace=False)]
    return table.astype(np.float32)


def scorer_model(mean: np.ndarray, std: np.ndarray) -> onnx.ModelProto:
    """score = sigmoid(((features - mean) / std) @ W - 3): features FP32 [n, 9] -> score FP32 [n, 1]."""
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "W"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud_scorer",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", len(COLUMNS)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        [
            numpy_helper.from_array(mean.astype(np.float32), "mean"),
            numpy_helper.from_array(std.astype(np.float32), "std"),
            numpy_helper.from_array(_WEIGHTS, "W"),
            numpy_helper.from_array(np.array([-3.0], dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def write_fraud_scorer(repository: Path, name: str, version: int) -> Path:
    """`<repository>/<name>/<version>/` with the scorer and model.json's feature spec and drift reference."""
    reference = fraud_rows(seed=0, rows=REFERENCE_ROWS)
    model = scorer_model(reference.mean(axis=0), reference.std(axis=0))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"features": reference})[0]
    drift = drift_reference(reference, COLUMNS, (prediction_histogram(scores), "score"), categorical=CATEGORICAL)
    features = FeatureSpec(input="features", columns=COLUMNS, request_features=COLUMNS)
    return write_version(
        repository,
        name,
        version,
        model,
        [("features", "FP32", [-1, len(COLUMNS)])],
        [("score", "FP32", [-1, 1])],
        BatchingPolicy(max_batch_size=256, max_queue_delay_ms=2.0),
        features,
        drift,
    )


def independent_psi(values: np.ndarray, reference: ReferenceHistogram) -> tuple[float, int]:
    """(PSI, NaN count) of `values` against `reference`, computed with `np.histogram` and a loop over
    categories: another route to the numbers the server computes with `searchsorted`."""
    values = np.asarray(values, dtype=np.float64)
    nan = int(np.isnan(values).sum())
    values = values[~np.isnan(values)]
    if reference.categories is None:
        edges = np.asarray(reference.bin_edges)
        counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0].astype(np.float64)
        expected = np.asarray(reference.proportions)
    else:
        counts = np.array(
            [np.count_nonzero(values == c) for c in reference.categories]
            + [np.count_nonzero(~np.isin(values, reference.categories))],
            dtype=np.float64,
        )
        expected = np.array([*reference.proportions, 1.0 - sum(reference.proportions)])
    total = 0.0
    for live_count, share in zip(counts, expected, strict=True):
        live = max(live_count / values.size, EPSILON)
        ref = max(share, EPSILON)
        total += (live - ref) * np.log(live / ref)
    return float(total), nan


def score_stream(
    client: httpx.Client, name: str, version: int | None, rows: np.ndarray, chunk: int = 100
) -> np.ndarray:
    """Score `rows` through the server in `chunk`-row requests, rotating v2 JSON, v2 binary and (for
    the unpinned route, the production version) v1 records; returns the scores as answered."""
    base = f"/v2/models/{name}" + ("" if version is None else f"/versions/{version}")
    scores = []
    for index, start in enumerate(range(0, len(rows), chunk)):
        part = rows[start : start + chunk]
        kind = index % 3
        if kind == 2 and version is None:
            records = [dict(zip(COLUMNS, row, strict=True)) for row in part.tolist()]
            response = client.post(f"/v1/models/{name}:predict", content=orjson.dumps({"instances": records}))
            assert response.status_code == 200, response.text
            scores.append(np.asarray(response.json()["predictions"], dtype=np.float32).reshape(-1))
            continue
        tensor = {"name": "features", "datatype": "FP32", "shape": list(part.shape)}
        if kind == 1:
            header = orjson.dumps(
                {
                    "inputs": [{**tensor, "parameters": {"binary_data_size": part.nbytes}}],
                    "outputs": [{"name": "score", "parameters": {"binary_data": True}}],
                }
            )
            response = client.post(
                f"{base}/infer",
                content=header + part.tobytes(),
                headers={
                    "Inference-Header-Content-Length": str(len(header)),
                    "Content-Type": "application/octet-stream",
                },
            )
            assert response.status_code == 200, response.text
            length = int(response.headers["inference-header-content-length"])
            scores.append(np.frombuffer(response.content[length:], dtype=np.float32))
        else:
            response = client.post(
                f"{base}/infer", content=orjson.dumps({"inputs": [{**tensor, "data": part.ravel().tolist()}]})
            )
            assert response.status_code == 200, response.text
            scores.append(np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32))
    return np.concatenate(scores).astype(np.float64)


def write_fraud_repository(root: Path, name: str = "fraud") -> Path:
    """`name` versions 1 (production) and 2 (canary), both loaded, each with its own drift window."""
    for version in (1, 2):
        write_fraud_scorer(root, name, version)
    control = ControlSnapshot(revision=1, models={name: ModelControl(aliases={"production": 1, "canary": 2})})
    (root / ".hotserve").mkdir()
    (root / ".hotserve" / "control.json").write_text(control.model_dump_json())
    return root


def shifted(rows: np.ndarray, column: str, factor: float) -> np.ndarray:
    """A copy of `rows` with one feature multiplied by `factor`."""
    out = rows.copy()
    out[:, COLUMNS.index(column)] *= factor
    return out


def drift_report(base_url: str, name: str, version: int, rows: int) -> dict[str, Any]:
    """The drift route's report once it covers `rows` rows (the server recomputes it periodically)."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        report: dict[str, Any] = httpx.get(f"{base_url}/v2/models/{name}/versions/{version}/drift").json()
        if report["window"]["rows"] == rows and report["computed_at"] is not None:
            return report
        assert time.monotonic() < deadline, f"drift report never covered {rows} rows: {report['window']}"
        time.sleep(0.05)

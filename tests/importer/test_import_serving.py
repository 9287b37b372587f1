"""Imported models served by a real `hotserve serve` process answer as their original library does.

One repository holds every real model the importer takes: scikit-learn (a pipeline, gradient
boosting, a three-input column transformer), LightGBM through onnxmltools, onnxruntime's own
example models (served without a batch axis) and a custom-operator graph. Requests go through
v2 JSON, the v2 binary extension (the standard tritonclient) and v1 records; answers are
compared with the original library's `predict_proba`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import tritonclient.http as httpclient

from exporters.imports.pipeline import ImportOptions, import_model
from load_tests.server_process import ServerProcess, start_server
from tests.importer.conftest import FEATURES, Converted

pytestmark = pytest.mark.integration

PROBABILITY_TOLERANCE = 1e-5
"""|served - predict_proba|: float32 graphs against scikit-learn's float64 arithmetic."""


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory,
    sklearn_pipeline: Converted,
    gradient_boosting: Converted,
    lightgbm_model: Converted,
    mixed_pipeline: Converted,
    reference_csv: Path,
    mixed_csv: Path,
    ort_datasets: Path,
    custom_op_model: Path,
    extensions_library: Path,
) -> Path:
    root = tmp_path_factory.mktemp("imported")
    imports = [
        (
            sklearn_pipeline.path,
            ImportOptions(name="pipeline", reference=reference_csv, label="label", meta={"owner": "risk"}),
        ),
        (gradient_boosting.path, ImportOptions(name="gbc", reference=reference_csv, label="label")),
        (lightgbm_model.path, ImportOptions(name="lgbm", reference=reference_csv, label="label")),
        (mixed_pipeline.path, ImportOptions(name="mixed", reference=mixed_csv, label="label")),
        (ort_datasets / "logreg_iris.onnx", ImportOptions(name="iris", batch_axis=False, strip_zipmap=True)),
        (ort_datasets / "sigmoid.onnx", ImportOptions(name="sigmoid", batch_axis=False)),
        (custom_op_model, ImportOptions(name="upper", op_libraries=(extensions_library,))),
    ]
    for source, options in imports:
        import_model(source, root, options)
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(repository, tmp_path_factory.mktemp("logs") / "server.log", ready_path="/v2/health/ready")
    yield process
    assert process.stop() == 0, process.log()


def _infer_json(server: ServerProcess, model: str, inputs: list[dict[str, object]]) -> dict[str, np.ndarray]:
    response = httpx.post(f"{server.base_url}/v2/models/{model}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


@pytest.mark.parametrize(
    "model, fixture, input_name",
    [
        ("pipeline", "sklearn_pipeline", "X"),
        ("gbc", "gradient_boosting", "X"),
        ("lgbm", "lightgbm_model", "input"),
    ],
)
def test_imported_classifiers_answer_like_predict_proba(
    server: ServerProcess,
    table: pd.DataFrame,
    model: str,
    fixture: str,
    input_name: str,
    request: pytest.FixtureRequest,
) -> None:
    original: Converted = request.getfixturevalue(fixture)
    x = table[FEATURES].to_numpy(np.float32)[:32]
    served = _infer_json(
        server, model, [{"name": input_name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    )
    expected = original.model.predict_proba(x)
    difference = float(np.abs(served["probabilities"] - expected).max())
    print(f"\n{model}: max |served - predict_proba| = {difference:.3g} over {len(x)} rows")
    assert difference <= PROBABILITY_TOLERANCE
    np.testing.assert_array_equal(served["label"], original.model.predict(x))


def test_v1_records_reach_an_imported_model_through_its_feature_spec(
    server: ServerProcess, sklearn_pipeline: Converted, table: pd.DataFrame
) -> None:
    rows = table[FEATURES].iloc[:3]
    response = httpx.post(
        f"{server.base_url}/v1/models/pipeline:predict", json={"instances": rows.to_dict(orient="records")}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = sklearn_pipeline.model.predict_proba(rows.to_numpy(np.float32))
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=PROBABILITY_TOLERANCE)
    assert [p["label"] for p in predictions] == sklearn_pipeline.model.predict(rows.to_numpy(np.float32)).tolist()


@pytest.mark.parametrize("binary", [False, True])
def test_three_input_model_answers_a_standard_client_in_json_and_binary(
    server: ServerProcess, mixed_pipeline: Converted, mixed_table: pd.DataFrame, binary: bool
) -> None:
    client = httpclient.InferenceServerClient(server.base_url.removeprefix("http://"))
    rows = mixed_table.iloc[:16]
    tensors = []
    for name, datatype in (("amount", "FP32"), ("count", "FP32"), ("country", "BYTES")):
        values = rows[[name]].to_numpy()
        values = (
            values.astype(np.float32)
            if datatype == "FP32"
            else np.array([[v.encode()] for v in rows[name]], dtype=object)
        )
        tensor = httpclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        tensors.append(tensor)
    result = client.infer(
        "mixed",
        tensors,
        outputs=[
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
            httpclient.InferRequestedOutput("label", binary_data=binary),
        ],
    )
    features = rows[["amount", "count", "country"]]
    difference = float(np.abs(result.as_numpy("probabilities") - mixed_pipeline.model.predict_proba(features)).max())
    print(
        f"\nmixed ({'binary' if binary else 'JSON'}): max |served - predict_proba| = "
        f"{difference:.3g} over {len(rows)} rows"
    )
    assert difference <= PROBABILITY_TOLERANCE
    np.testing.assert_array_equal(result.as_numpy("label"), mixed_pipeline.model.predict(features))


def test_onnxruntime_example_models_are_served_one_run_per_request(server: ServerProcess, ort_datasets: Path) -> None:
    x = np.array([[5.1, 3.5], [6.2, 2.9], [7.7, 3.0]], dtype=np.float32)
    served = _infer_json(
        server, "iris", [{"name": "float_input", "datatype": "FP32", "shape": [3, 2], "data": x.ravel().tolist()}]
    )
    session = ort.InferenceSession(str(ort_datasets / "logreg_iris.onnx"), providers=["CPUExecutionProvider"])
    label, maps = session.run(None, {"float_input": x})
    expected = np.array([[row[c] for c in (0, 1, 2)] for row in maps])
    difference = float(np.abs(served["probabilities"] - expected).max())
    print(f"\niris: max |served - original (ZipMap)| = {difference:.3g}")
    assert difference <= PROBABILITY_TOLERANCE
    np.testing.assert_array_equal(served["label"], label)

    cube = np.linspace(-4, 4, 60, dtype=np.float32).reshape(3, 4, 5)
    served = _infer_json(
        server, "sigmoid", [{"name": "x", "datatype": "FP32", "shape": [3, 4, 5], "data": cube.ravel().tolist()}]
    )
    np.testing.assert_allclose(served["y"], 1.0 / (1.0 + np.exp(-cube)), atol=1e-6)

    wrong = httpx.post(
        f"{server.base_url}/v2/models/iris/infer",
        json={"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]},
    )
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "inputs.float_input.shape: expected [3, 2], got [1, 2] (axis 0 is 1)"}
    v1 = httpx.post(f"{server.base_url}/v1/models/iris:predict", json={"instances": [[1.0, 2.0]]})
    assert v1.status_code == 400 and "no batch axis" in v1.json()["error"]


def test_custom_operator_model_is_served_with_its_library(server: ServerProcess) -> None:
    served = _infer_json(
        server, "upper", [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["abc", "Mixed"]}]
    )
    assert served["upper"].tolist() == ["ABC", "MIXED"]


def test_model_metadata_shows_the_imported_lineage(server: ServerProcess, sklearn_pipeline: Converted) -> None:
    metadata = httpx.get(f"{server.base_url}/v2/models/pipeline").json()
    lineage = metadata["lineage"]
    assert lineage["architecture"] == "imported"
    assert lineage["metrics"]["auc"] > 0.9 and lineage["dataset_sha256"]
    source = lineage["imported_from"]
    assert source["file"] == "pipeline.onnx" and source["producer_name"] == "skl2onnx"
    assert source["meta"] == {"owner": "risk"}
    iris = httpx.get(f"{server.base_url}/v2/models/iris").json()
    assert iris["batching"]["batch_axis"] is False and iris["batching"]["enabled"] is False

"""Multiclass and regression checkpoints -> ONNX with parity -> a real `hotserve serve` answering v1 and v2.

The class names live in the graph (a LabelEncoder after the class index), so the server needs
nothing new: its answers are compared with onnxruntime run by hand on the published file.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from exporters.errors import MetricRegression, ParityError
from exporters.export.class_labels import attach_class_names
from exporters.export.options import ExportOptions
from exporters.export.pipeline import export_checkpoint
from exporters.shared.checks import FP32_TOLERANCE, INT8_TASK_TOLERANCE
from exporters.shared.parity import compare_labels, metric_change
from load_tests.server_process import start_server
from server.contract.manifest import ONNX_FILENAME, ModelManifest, TensorSpec
from training.checkpoints import load_checkpoint
from training.metrics import evaluate_task


def _onnx(version_dir: Path, rows: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(version_dir / ONNX_FILENAME), providers=["CPUExecutionProvider"])
    return list(session.run(None, {"features": rows}))


def test_multiclass_graph_answers_class_probabilities_and_names(
    multiclass_checkpoint: Path, tasks_repository: Path
) -> None:
    loaded = load_checkpoint(multiclass_checkpoint)
    classes = loaded.metadata.classes
    assert classes == ["bargain", "business", "premium", "regular"]
    rows = loaded.holdout_inputs["features"]
    with torch.no_grad():
        expected_probabilities, expected_index = (t.numpy() for t in loaded.module(torch.from_numpy(rows)))

    version_dir = tasks_repository / "segments" / "1"
    probabilities, labels = _onnx(version_dir, rows)

    np.testing.assert_allclose(probabilities, expected_probabilities, atol=FP32_TOLERANCE, rtol=0)
    assert labels.tolist() == [classes[i] for i in expected_index]
    manifest = ModelManifest.read(version_dir)
    assert manifest.outputs == [
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 4]),
        TensorSpec(name="label", datatype="BYTES", shape=[-1]),
    ]
    assert manifest.drift is not None and manifest.drift.prediction_output == "label"
    assert manifest.drift.prediction is not None and manifest.drift.prediction.categories == classes
    assert (manifest.lineage.model_extra or {})["classes"] == classes


def test_regression_graph_predicts_what_torch_predicts(regression_checkpoint: Path, tasks_repository: Path) -> None:
    loaded = load_checkpoint(regression_checkpoint)
    rows = loaded.holdout_inputs["features"]
    with torch.no_grad():
        expected = loaded.module(torch.from_numpy(rows)).numpy()

    (prediction,) = _onnx(tasks_repository / "delivery" / "1", rows)

    np.testing.assert_allclose(prediction, expected, rtol=1e-5, atol=1e-4)
    assert float(prediction.mean()) > 10  # minutes, not standardised units
    manifest = ModelManifest.read(tasks_repository / "delivery" / "1")
    assert manifest.outputs == [TensorSpec(name="prediction", datatype="FP32", shape=[-1])]
    assert manifest.drift is not None and manifest.drift.prediction_output == "prediction"
    assert manifest.export is not None and manifest.export.parity_max_abs_diff <= FP32_TOLERANCE


@pytest.mark.parametrize(
    ("checkpoint", "metrics"),
    [
        ("multiclass_checkpoint", {"accuracy", "macro_f1", "log_loss"}),
        ("regression_checkpoint", {"rmse", "mae", "r2"}),
    ],
)
def test_int8_export_records_the_tasks_metric_change(
    checkpoint: str, metrics: set[str], tmp_path: Path, tasks_repository: Path, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(checkpoint)
    result = export_checkpoint(path, tmp_path, ExportOptions(quantize="int8"))

    loaded = load_checkpoint(path)
    export = result.manifest.export
    assert export is not None and set(export.metric_deltas) == metrics
    assert export.parity_max_abs_diff <= INT8_TASK_TOLERANCE[loaded.metadata.task]
    # The deltas are int8 minus float on the held-out rows, recomputed here from the two graphs.
    rows, labels = loaded.holdout_inputs["features"], loaded.holdout_labels
    name = result.manifest.name
    int8 = evaluate_task(loaded.metadata.task, _onnx(result.version_dir, rows)[0], labels)
    fp32 = evaluate_task(loaded.metadata.task, _onnx(tasks_repository / name / "1", rows)[0], labels)
    for metric, delta in export.metric_deltas.items():
        assert delta == pytest.approx(int8[metric] - fp32[metric], abs=1e-9)


def test_fp16_multiclass_graph_keeps_its_class_names(multiclass_checkpoint: Path, tmp_path: Path) -> None:
    result = export_checkpoint(multiclass_checkpoint, tmp_path, ExportOptions(fp16=True))
    rows = load_checkpoint(multiclass_checkpoint).holdout_inputs["features"]
    probabilities, labels = _onnx(result.version_dir, rows)
    assert probabilities.dtype == np.float32
    assert set(labels.tolist()) <= {"bargain", "business", "premium", "regular"}


def test_a_label_may_differ_from_torch_only_on_a_near_tie() -> None:
    classes = ["a", "b", "c"]
    probabilities = np.array([[0.5, 0.49995, 0.00005], [0.2, 0.7, 0.1]])
    indices = np.array([0, 1])
    assert compare_labels("int8", probabilities, indices, np.array(["b", "b"], dtype=object), classes, 1e-4) == 1
    with pytest.raises(ParityError, match=r"label 'c' vs PyTorch's 'b'.* = 0.6 .*worst row 1"):
        compare_labels("int8", probabilities, indices, np.array(["a", "c"], dtype=object), classes, 1e-4)
    with pytest.raises(ParityError, match=r"label 'z' vs PyTorch's 'a'"):
        compare_labels("fp32", probabilities, indices, np.array(["z", "b"], dtype=object), classes, 1e-4)


def test_reduced_precision_is_judged_by_accuracy_or_rmse() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    worse = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    classes = np.array([0, 1, 0, 1])
    with pytest.raises(MetricRegression, match="int8 model accuracy = 0.7500 vs 1.0000"):
        metric_change("int8", probabilities, worse, classes, task="multiclass", max_accuracy_drop=0.1)
    targets = np.array([10.0, 20.0, 30.0, 40.0])
    deltas = metric_change("int8", targets + 1.0, targets + 1.01, targets, task="regression")
    assert deltas["rmse"] == pytest.approx(0.01) and set(deltas) == {"rmse", "mae", "r2"}
    with pytest.raises(
        MetricRegression, match=r"rmse = 1.1000 vs 1.0000 .*an increase of 10.00% exceeds the allowed 2.00%"
    ):
        metric_change("int8", targets + 1.0, targets + 1.1, targets, task="regression")


def test_whole_number_classes_are_served_as_int64(tmp_path: Path) -> None:
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["n"])
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0)], "argmax", [scores], [label]
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))

    attach_class_names(path, "label", [3, 5, 7])

    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"scores": np.array([[0.1, 0.9, 0.0], [0.0, 0.2, 0.8]], dtype=np.float32)})
    assert got.dtype == np.int64 and got.tolist() == [5, 7]


@pytest.mark.integration
def test_server_answers_v1_and_v2_as_onnxruntime_does(tasks_repository: Path, tmp_path: Path) -> None:
    server = start_server(tasks_repository, tmp_path / "server.log", ready_path="/v2/health/ready")
    try:
        for name in ("segments", "delivery"):
            manifest = ModelManifest.read(tasks_repository / name / "1")
            assert manifest.features is not None
            columns = manifest.features.columns
            rows = load_checkpoint(Path(manifest.lineage.checkpoint or "")).holdout_inputs["features"][:5]
            expected = dict(zip([o.name for o in manifest.outputs], _onnx(tasks_repository / name / "1", rows)))

            v2 = httpx.post(
                f"{server.base_url}/v2/models/{name}/infer",
                timeout=30,
                json={
                    "inputs": [
                        {
                            "name": "features",
                            "datatype": "FP32",
                            "shape": list(rows.shape),
                            "data": rows.ravel().tolist(),
                        }
                    ]
                },
            )
            assert v2.status_code == 200, v2.text
            outputs = {o["name"]: o for o in v2.json()["outputs"]}
            assert set(outputs) == set(expected)
            v1 = httpx.post(
                f"{server.base_url}/v1/models/{name}:predict",
                timeout=30,
                json={"instances": [dict(zip(columns, row)) for row in rows.tolist()]},
            )
            assert v1.status_code == 200, v1.text
            predictions = v1.json()["predictions"]

            for output, want in expected.items():
                got = outputs[output]
                assert got["shape"] == list(want.shape)
                if want.dtype == object:  # class names
                    assert got["datatype"] == "BYTES" and got["data"] == want.tolist()
                    assert [p[output] for p in predictions] == want.tolist()
                    continue
                np.testing.assert_allclose(np.asarray(got["data"], np.float32).reshape(want.shape), want, rtol=1e-6)
                served = [p[output] for p in predictions] if len(expected) > 1 else predictions
                np.testing.assert_allclose(np.asarray(served, np.float32), want, rtol=1e-6)
    finally:
        assert server.stop() == 0, server.log()

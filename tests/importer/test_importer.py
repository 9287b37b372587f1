"""`import_model` on real converted models: signature, parity, lineage, drift reference, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from exporters.errors import ExportError, ModelRefused, VersionExists
from exporters.imports.pipeline import ImportOptions, import_model
from server.contract.manifest import ONNX_FILENAME, ModelManifest, sha256_file
from server.registry.loader import open_version, warm_up_inputs
from server.settings import Settings
from tests.importer.conftest import FEATURES, Converted
from training.metrics import evaluate

CPU = Settings(execution_providers="CPUExecutionProvider")


def _served_outputs(version_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the server's own loader and runtime answer for `inputs` on the published version."""
    manifest = ModelManifest.read(version_dir)
    _, runtime = open_version(version_dir, manifest.name, manifest.version, CPU)
    try:
        return runtime.run(inputs)
    finally:
        runtime.close()


def test_sklearn_pipeline_is_published_with_signature_lineage_drift_and_parity(
    sklearn_pipeline: Converted, reference_csv: Path, table: pd.DataFrame, tmp_path: Path
) -> None:
    result = import_model(
        sklearn_pipeline.path,
        tmp_path,
        ImportOptions(name="scorer", reference=reference_csv, label="label", meta={"owner": "risk", "ticket": "R-7"}),
    )
    manifest = ModelManifest.read(result.version_dir)
    assert result.version_dir == tmp_path / "scorer" / "1"
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [("X", "FP32", [-1, 4])]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    assert manifest.onnx_sha256 == sha256_file(result.version_dir / ONNX_FILENAME)

    source = manifest.imported_from
    assert source is not None
    assert (source.file, source.sha256) == ("pipeline.onnx", sha256_file(sklearn_pipeline.path))
    assert source.producer_name == "skl2onnx" and source.producer_version
    assert source.meta == {"owner": "risk", "ticket": "R-7"} and source.edits == []
    assert manifest.lineage.dataset_sha256 == sha256_file(reference_csv)

    x = table[FEATURES].to_numpy(np.float32)
    expected = sklearn_pipeline.model.predict_proba(x)
    assert manifest.lineage.metrics == pytest.approx(evaluate(expected[:, 1], table["label"]), abs=1e-5)
    assert [r.stage for r in result.parity] == ["imported", "optimised"]
    assert all(r.max_abs_diff <= 1e-4 and r.rows == len(table) for r in result.parity)
    assert manifest.export is not None and manifest.export.parity_reference == "source onnx"

    drift = manifest.drift
    assert drift is not None and drift.sample_size == len(table)
    assert [h.name for h in drift.features] == FEATURES
    assert drift.prediction_output == "probabilities" and drift.prediction is not None
    assert manifest.features is not None and manifest.features.columns == FEATURES
    assert manifest.features.request_features == FEATURES

    served = _served_outputs(result.version_dir, {"X": x})
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(served["label"], sklearn_pipeline.model.predict(x))


def test_each_import_is_the_next_version_and_none_is_ever_overwritten(
    sklearn_pipeline: Converted, gradient_boosting: Converted, tmp_path: Path
) -> None:
    first = import_model(sklearn_pipeline.path, tmp_path, ImportOptions(name="m"))
    second = import_model(gradient_boosting.path, tmp_path, ImportOptions(name="m"))
    assert (first.manifest.version, second.manifest.version) == (1, 2)
    published = (first.version_dir / ONNX_FILENAME).read_bytes(), (first.version_dir / "model.json").read_bytes()

    with pytest.raises(VersionExists, match="never overwritten"):
        import_model(gradient_boosting.path, tmp_path, ImportOptions(name="m", version=1))
    assert (
        (first.version_dir / ONNX_FILENAME).read_bytes(),
        (first.version_dir / "model.json").read_bytes(),
    ) == published
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]  # no staging leftovers


def test_zipmap_output_is_refused_naming_the_output_and_the_converter_option(
    sklearn_pipeline_zipmap: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelRefused) as refused:
        import_model(sklearn_pipeline_zipmap, tmp_path, ImportOptions(name="m"))
    message = str(refused.value)
    assert "output 'output_probability' is seq(map(int64,tensor(float)))" in message
    assert "options={'zipmap': False}" in message and "--strip-zipmap" in message
    assert not (tmp_path / "m").exists()


def test_strip_zipmap_publishes_the_probability_tensor(
    sklearn_pipeline: Converted, sklearn_pipeline_zipmap: Path, table: pd.DataFrame, tmp_path: Path
) -> None:
    result = import_model(sklearn_pipeline_zipmap, tmp_path, ImportOptions(name="m", strip_zipmap=True))
    probabilities = result.manifest.outputs[1]
    assert (probabilities.name, probabilities.datatype, probabilities.shape) == ("output_probability", "FP32", [-1, 2])
    source = result.manifest.imported_from
    assert source is not None and "in the order [0, 1]" in source.edits[0]
    x = table[FEATURES].to_numpy(np.float32)
    served = _served_outputs(result.version_dir, {"X": x})
    np.testing.assert_allclose(served["output_probability"], sklearn_pipeline.model.predict_proba(x), atol=1e-5)


def test_graph_without_a_batch_axis_is_refused_unless_served_without_batching(
    ort_datasets: Path, tmp_path: Path
) -> None:
    sigmoid = ort_datasets / "sigmoid.onnx"
    with pytest.raises(
        ModelRefused,
        match=r"input 'x' has shape \[3, 4, 5\] with a fixed first axis "
        r"of 3: the graph has no batch axis.*--no-batch",
    ):
        import_model(sigmoid, tmp_path, ImportOptions(name="sigmoid"))

    result = import_model(sigmoid, tmp_path, ImportOptions(name="sigmoid", batch_axis=False))
    batching = result.manifest.batching
    assert (batching.batch_axis, batching.enabled, batching.max_batch_size) == (False, False, 1)
    assert result.manifest.inputs[0].shape == [3, 4, 5]
    assert any("batching off" in note for note in result.notes)
    x = np.linspace(-3, 3, 60, dtype=np.float32).reshape(3, 4, 5)
    np.testing.assert_allclose(_served_outputs(result.version_dir, {"x": x})["y"], 1 / (1 + np.exp(-x)), atol=1e-6)


def test_files_onnx_checker_rejects_are_refused(ort_datasets: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelRefused, match="onnx's checker rejects it: W in initializer but not in graph input"):
        import_model(ort_datasets / "mul_1.onnx", tmp_path, ImportOptions(name="mul"))

    dangling = helper.make_model(
        helper.make_graph(
            [helper.make_node("Add", ["x", "missing"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=9,
    )
    path = tmp_path / "dangling.onnx"
    onnx.save(dangling, str(path))
    with pytest.raises(ModelRefused, match="onnx's checker rejects it: .*missing"):
        import_model(path, tmp_path, ImportOptions(name="dangling"))

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelRefused, match="not a readable ONNX model"):
        import_model(garbage, tmp_path, ImportOptions(name="garbage"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.onnx", "garbage.onnx"]


def test_rows_that_influence_each_other_are_not_a_batch_axis(tmp_path: Path) -> None:
    """y = x - mean(x over rows): one output row per input row, yet batching would change answers."""
    centred = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1),
                helper.make_node("Sub", ["x", "mean"], ["y"]),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=9,
    )
    path = tmp_path / "centred.onnx"
    onnx.save(centred, str(path))
    with pytest.raises(ModelRefused, match="output 'y' changes when the rows run in two parts"):
        import_model(path, tmp_path / "repo", ImportOptions(name="centred"))


def test_custom_operators_need_their_library_which_travels_with_the_version(
    custom_op_model: Path, extensions_library: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        ModelRefused,
        match=r"custom operators onnxruntime does not implement "
        r"\(ai.onnx.contrib: StringUpper\).*--custom-ops-library",
    ):
        import_model(custom_op_model, tmp_path, ImportOptions(name="upper"))

    result = import_model(custom_op_model, tmp_path, ImportOptions(name="upper", op_libraries=(extensions_library,)))
    (library,) = result.manifest.op_libraries
    assert library.domains == ["ai.onnx.contrib"]
    assert sha256_file(result.version_dir / library.file) == sha256_file(extensions_library)
    served = _served_outputs(result.version_dir, {"text": np.array([b"abc", b"Zed"], dtype=object)})
    assert served["upper"].tolist() == ["ABC", "ZED"]


def test_lightgbm_label_declared_with_one_row_is_declared_dynamic(
    lightgbm_model: Converted, reference_csv: Path, table: pd.DataFrame, tmp_path: Path
) -> None:
    result = import_model(
        lightgbm_model.path, tmp_path, ImportOptions(name="lgbm", reference=reference_csv, label="label")
    )
    source = result.manifest.imported_from
    assert source is not None and source.producer_name == "OnnxMLTools"
    assert source.edits == [
        "output 'label' was declared with a fixed first axis of 1 but has one row per input row: declared it dynamic"
    ]
    assert result.manifest.outputs[0].shape == [-1]
    x = table[FEATURES].to_numpy(np.float32)
    served = _served_outputs(result.version_dir, {"input": x})
    np.testing.assert_allclose(served["probabilities"], lightgbm_model.model.predict_proba(x), atol=1e-5)
    np.testing.assert_array_equal(served["label"], lightgbm_model.model.predict(x))


def test_int8_quantises_a_matmul_model_with_parity_and_metric_change(
    mlp_classifier: Converted, reference_csv: Path, tmp_path: Path
) -> None:
    result = import_model(
        mlp_classifier.path,
        tmp_path,
        ImportOptions(name="mlp", reference=reference_csv, label="label", quantize="int8"),
    )
    export = result.manifest.export
    assert export is not None and export.quantization == "int8"
    assert [r.stage for r in result.parity] == ["imported", "optimised", "int8"]
    assert 0 < result.parity[-1].max_abs_diff <= 5e-2
    assert set(export.metric_deltas) == {"auc", "accuracy", "log_loss"}
    assert export.metric_deltas["auc"] > -0.01
    nodes = {n.op_type for n in onnx.load(str(result.version_dir / ONNX_FILENAME)).graph.node}
    assert "MatMulInteger" in nodes


def test_int8_is_refused_when_it_would_change_nothing(gradient_boosting: Converted, tmp_path: Path) -> None:
    with pytest.raises(ModelRefused, match="--quantize int8 changes nothing"):
        import_model(gradient_boosting.path, tmp_path, ImportOptions(name="gbc", quantize="int8"))
    assert not (tmp_path / "gbc").exists()


def test_one_input_per_column_takes_the_table_by_column_name(
    mixed_pipeline: Converted, mixed_csv: Path, tmp_path: Path
) -> None:
    result = import_model(
        mixed_pipeline.path, tmp_path, ImportOptions(name="mixed", reference=mixed_csv, label="label")
    )
    manifest = result.manifest
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [
        ("amount", "FP32", [-1, 1]),
        ("count", "FP32", [-1, 1]),
        ("country", "BYTES", [-1, 1]),
    ]
    assert manifest.drift is not None and [h.name for h in manifest.drift.features] == ["amount", "count"]
    assert manifest.features is None  # three inputs: v2 only
    assert manifest.lineage.metrics["auc"] > 0.9

    with pytest.raises(ExportError, match="a feature spec assembles v1 records into one 2-D input"):
        import_model(
            mixed_pipeline.path, tmp_path, ImportOptions(name="mixed", feature_spec={"request_features": ["amount"]})
        )


def test_feature_spec_names_request_and_store_features_and_the_entity_key(
    sklearn_pipeline: Converted, reference_csv: Path, tmp_path: Path
) -> None:
    spec = {
        "request_features": ["f0", "f1"],
        "store_features": ["f2", "f3"],
        "entity_key": "customer_id",
        "defaults": {"f3": 0.0},
    }
    result = import_model(
        sklearn_pipeline.path,
        tmp_path,
        ImportOptions(
            name="joined", reference=reference_csv, features=tuple(FEATURES), label="label", feature_spec=spec
        ),
    )
    features = result.manifest.features
    assert features is not None
    assert (features.input, features.columns, features.entity_key) == ("X", FEATURES, "customer_id")
    assert features.store_features == ["f2", "f3"] and features.defaults == {"f3": 0.0}

    with pytest.raises(ExportError, match=r"--feature-spec is invalid: .*store_features need an entity_key"):
        import_model(
            sklearn_pipeline.path,
            tmp_path,
            ImportOptions(
                name="joined", feature_spec={"request_features": ["f0", "f1"], "store_features": ["f2", "f3"]}
            ),
        )


def test_a_table_that_does_not_fit_the_input_is_refused(
    sklearn_pipeline: Converted, reference_csv: Path, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=r"input 'X' takes 4 columns, 2 features are given"):
        import_model(
            sklearn_pipeline.path,
            tmp_path,
            ImportOptions(name="m", reference=reference_csv, features=("f0", "f1"), label="label"),
        )
    with pytest.raises(ExportError, match="has no column 'nope'"):
        import_model(sklearn_pipeline.path, tmp_path, ImportOptions(name="m", reference=reference_csv, label="nope"))


def test_what_is_published_passes_the_servers_warm_up(ort_datasets: Path, tmp_path: Path) -> None:
    """logreg_iris: ZipMap stripped, fixed batch of 3 served as one run per request."""
    result = import_model(
        ort_datasets / "logreg_iris.onnx", tmp_path, ImportOptions(name="iris", batch_axis=False, strip_zipmap=True)
    )
    manifest = result.manifest
    _, runtime = open_version(result.version_dir, "iris", 1, CPU)
    try:
        outputs = runtime.run(warm_up_inputs(manifest, 1))
    finally:
        runtime.close()
    assert outputs["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_weights_in_external_data_files_are_embedded_in_the_published_graph(
    mlp_classifier: Converted, table: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "exported" / "mlp.onnx"
    source.parent.mkdir()
    onnx.save(
        onnx.load(str(mlp_classifier.path)),
        str(source),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mlp.weights",
        size_threshold=0,
    )
    result = import_model(source, tmp_path / "repo", ImportOptions(name="mlp"))
    assert sorted(p.name for p in result.version_dir.iterdir()) == ["model.json", "model.onnx"]
    x = table[FEATURES].to_numpy(np.float32)
    np.testing.assert_allclose(
        _served_outputs(result.version_dir, {"X": x})["probabilities"], mlp_classifier.model.predict_proba(x), atol=1e-5
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "../escape"}, "model name '../escape' is not a valid repository folder name"),
        ({"name": "m", "batch_axis": False, "max_batch_size": 8}, "--no-batch serves each request as one"),
        ({"name": "m", "label": "y"}, "--features and --label describe the --reference table"),
    ],
)
def test_inconsistent_options_are_refused_before_any_work(options: dict[str, object], message: str) -> None:
    with pytest.raises(ExportError, match=message):
        ImportOptions(**options)  # type: ignore[arg-type]

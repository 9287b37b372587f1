"""Publishing: model.json validates and pins the graph's sha256; versions appear atomically, never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from exporters.errors import VersionExists
from exporters.export.pipeline import ExportResult, export_checkpoint
from exporters.shared.manifest_builder import batching_policy
from exporters.shared.publish import STAGING_PREFIX, VersionStaging
from server.contract.manifest import (
    MANIFEST_FILENAME,
    ONNX_FILENAME,
    ModelManifest,
    TensorSpec,
    sha256_file,
)
from training.checkpoints import read_metadata


@pytest.mark.parametrize("exported", ["exported_mlp", "exported_transformer"])
def test_model_json_validates_and_pins_the_published_graph(exported: str, request: pytest.FixtureRequest) -> None:
    result: ExportResult = request.getfixturevalue(exported)
    metadata = read_metadata(result.checkpoint)

    manifest = ModelManifest.read(result.version_dir)

    assert manifest == result.manifest
    assert manifest.onnx_sha256 == sha256_file(result.version_dir / ONNX_FILENAME)
    assert (manifest.name, manifest.version) == (metadata.name, metadata.version)
    assert result.version_dir.name == str(metadata.version)
    assert sorted(p.name for p in result.version_dir.iterdir()) == [MANIFEST_FILENAME, ONNX_FILENAME]
    assert manifest.inputs == metadata.inputs and manifest.outputs == metadata.outputs
    assert manifest.features == metadata.features
    assert manifest.drift == metadata.drift
    assert manifest.lineage.checkpoint == str(result.checkpoint.resolve())
    assert manifest.lineage.dataset_sha256 == metadata.dataset_sha256
    assert manifest.lineage.metrics == metadata.metrics
    export = manifest.export
    assert export is not None and export.optimized and export.opset >= 17
    assert {"torch", "onnx", "onnxruntime", "numpy", "python"} <= set(export.library_versions)


def test_graph_declares_the_checkpoint_signature_with_a_dynamic_batch_axis(exported_transformer: ExportResult) -> None:
    graph = onnx.load(str(exported_transformer.version_dir / ONNX_FILENAME))
    onnx.checker.check_model(graph, full_check=True)

    (tokens,) = graph.graph.input
    (probability,) = graph.graph.output
    assert tokens.name == "tokens" and probability.name == "probability"
    batch = tokens.type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")
    assert [d.dim_value for d in tokens.type.tensor_type.shape.dim[1:]] == [32, 64]
    assert exported_transformer.manifest.inputs == [TensorSpec(name="tokens", datatype="FP32", shape=[-1, 32, 64])]
    # Standard ONNX only: onnxruntime's own domains are not declared by the optimised graph.
    assert [(entry.domain, entry.version) for entry in graph.opset_import] == [("", 18)]


def test_batching_defaults_follow_the_architecture(
    exported_mlp: ExportResult, exported_transformer: ExportResult
) -> None:
    mlp, transformer = exported_mlp.manifest.batching, exported_transformer.manifest.batching
    assert (mlp.max_batch_size, mlp.max_queue_delay_ms) == (64, 2.0)
    assert transformer.max_batch_size == 32
    assert transformer.preferred_batch_sizes == [8, 16, 32]
    assert (mlp.instances, transformer.instances) == (1, 2)


def test_batching_overrides_drop_preferred_sizes_that_no_longer_fit() -> None:
    policy = batching_policy("transformer", max_batch_size=16, max_queue_delay_ms=0.5)
    assert (policy.max_batch_size, policy.max_queue_delay_ms) == (16, 0.5)
    assert policy.preferred_batch_sizes == [8, 16]
    assert batching_policy("some-new-arch").max_batch_size == 64
    assert batching_policy("transformer", instances=3).instances == 3


def test_existing_version_is_refused_and_left_untouched(exported_mlp: ExportResult) -> None:
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in exported_mlp.version_dir.iterdir()}

    with pytest.raises(VersionExists, match="never overwritten"):
        export_checkpoint(exported_mlp.checkpoint, exported_mlp.version_dir.parent.parent)

    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in exported_mlp.version_dir.iterdir()}
    assert after == before
    assert not [p for p in exported_mlp.version_dir.parent.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_existing_empty_version_folder_is_refused_too(tmp_path: Path) -> None:
    target = tmp_path / "fraud" / "3"
    target.mkdir(parents=True)
    with pytest.raises(VersionExists, match=str(target)), VersionStaging(target):
        pass


def test_staged_version_is_invisible_until_published(tmp_path: Path) -> None:
    target = tmp_path / "fraud" / "1"
    with VersionStaging(target) as staging:
        (staging.folder / "model.onnx").write_bytes(b"graph")
        assert not target.exists()
        assert staging.folder.parent == target.parent
        assert staging.folder.name.startswith(STAGING_PREFIX)
        published = staging.publish()

    assert published == target
    assert (target / "model.onnx").read_bytes() == b"graph"
    assert [p.name for p in target.parent.iterdir()] == ["1"]


def test_failed_staging_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "fraud" / "1"
    with pytest.raises(RuntimeError, match="boom"), VersionStaging(target) as staging:
        (staging.folder / "model.onnx").write_bytes(b"half a graph")
        raise RuntimeError("boom")

    assert list(tmp_path.iterdir()) == []


def test_failed_staging_keeps_a_model_folder_that_existed_before(tmp_path: Path) -> None:
    (tmp_path / "fraud" / "1").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="boom"), VersionStaging(tmp_path / "fraud" / "2"):
        raise RuntimeError("boom")

    assert [p.name for p in (tmp_path / "fraud").iterdir()] == ["1"]


def test_publish_loses_to_a_version_published_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "fraud" / "1"
    with VersionStaging(target) as staging:
        (staging.folder / "model.onnx").write_bytes(b"mine")
        target.mkdir()
        (target / "model.onnx").write_bytes(b"theirs")
        with pytest.raises(VersionExists):
            staging.publish()

    assert (target / "model.onnx").read_bytes() == b"theirs"
    assert [p.name for p in target.parent.iterdir()] == ["1"]


def test_model_json_is_plain_json_the_server_can_read(exported_mlp: ExportResult) -> None:
    raw = json.loads((exported_mlp.version_dir / MANIFEST_FILENAME).read_text())
    assert raw["platform"] == "onnxruntime_onnx"
    assert raw["export"]["quantization"] is None and raw["export"]["fp16"] is False

"""The feature view the exporter writes into `model.json`: typed from the training table, the
operator's choices applied, versioned so a changed definition never reads old keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.errors import ExportError
from exporters.export.feature_view import export_feature_spec
from exporters.export.options import ExportOptions
from exporters.export.pipeline import ExportResult
from training.checkpoints import METADATA_FILENAME, CheckpointMetadata


@pytest.fixture(scope="module")
def metadata(mlp_checkpoint: Path) -> CheckpointMetadata:
    return CheckpointMetadata.model_validate_json((mlp_checkpoint / METADATA_FILENAME).read_text())


def test_the_demo_models_stored_features_are_one_view_typed_from_the_training_table(exported_mlp: ExportResult) -> None:
    features = exported_mlp.manifest.features
    assert features is not None and features.view is not None
    view = features.view
    assert (view.label, view.entity_key, view.entity_key_type) == ("fraud:v1", "customer_id", "STRING")
    assert [(f.name, f.datatype, f.default, f.overridable) for f in view.features] == [
        ("cust_txn_count_7d", "INT64", None, False),
        ("cust_avg_amount_30d", "FP32", None, False),
        ("cust_chargeback_rate_90d", "FP32", None, False),
        ("cust_account_age_days", "FP32", None, False),
    ]
    assert (view.max_age_s, view.on_missing_entity, view.on_unavailable) == (None, "error", "error")


def test_export_options_set_defaults_overrides_max_age_and_fallbacks(
    metadata: CheckpointMetadata, tmp_path: Path
) -> None:
    options = ExportOptions(
        feature_view="customers",
        feature_max_age_s=3600,
        feature_defaults="training-mean",
        missing_entity="defaults",
        store_unavailable="defaults",
        request_overrides=("cust_account_age_days",),
    )
    spec = export_feature_spec(metadata, options, tmp_path)
    assert spec is not None and spec.view is not None
    view = spec.view
    assert (view.label, view.max_age_s, view.on_missing_entity, view.on_unavailable) == (
        "customers:v1",
        3600,
        "defaults",
        "defaults",
    )
    assert metadata.preprocessing is not None
    means = {c.name: c.mean for c in metadata.preprocessing.numeric}
    assert {f.name: f.default for f in view.features} == {f.name: means[f.name] for f in view.features}
    assert [f.name for f in view.features if f.overridable] == ["cust_account_age_days"]
    with pytest.raises(ExportError, match=r"--request-overrides \['amount'\]: not stored features"):
        export_feature_spec(metadata, ExportOptions(request_overrides=("amount",)), tmp_path)


def test_a_changed_stored_shape_gets_the_next_view_version_and_an_unchanged_one_keeps_it(
    metadata: CheckpointMetadata, exported_mlp: ExportResult
) -> None:
    repository = exported_mlp.version_dir.parent.parent  # holds fraud v1 with view fraud:v1
    same = export_feature_spec(metadata, ExportOptions(feature_max_age_s=60), repository)
    assert same is not None and same.view is not None and same.view.version == 1
    assert metadata.features is not None and metadata.features.view is not None
    retyped = metadata.features.view.model_copy(
        update={"features": [f.model_copy(update={"datatype": "FP64"}) for f in metadata.features.view.features]}
    )
    changed = metadata.model_copy(update={"features": metadata.features.model_copy(update={"view": retyped})})
    bumped = export_feature_spec(changed, ExportOptions(), repository)
    assert bumped is not None and bumped.view is not None and bumped.view.version == 2
    pinned = export_feature_spec(changed, ExportOptions(feature_view_version=7), repository)
    assert pinned is not None and pinned.view is not None and pinned.view.key_prefix == "hotserve:fv:fraud:v7:"

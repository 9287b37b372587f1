"""`hotserve export` records what the model's answer means (model.json's `prediction`): the
checkpoint's task, its prediction output, a binary decision threshold, a regression tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.errors import ExportError
from exporters.export.options import ExportOptions
from exporters.export.pipeline import ExportResult, export_checkpoint
from exporters.shared.checks import REGRESSION_AGREEMENT_STD
from server.cli import main
from server.contract.manifest import ModelManifest, PredictionContract
from training.checkpoints import load_checkpoint


def test_a_binary_export_records_its_task_and_the_default_threshold(exported_mlp: ExportResult) -> None:
    manifest = ModelManifest.read(exported_mlp.version_dir)
    assert manifest.prediction == PredictionContract(task="binary", decision_threshold=0.5)
    # the drift reference already names the prediction output: the contract reuses it
    assert manifest.drift is not None and manifest.drift.prediction_output == "probability"
    assert manifest.prediction_output == "probability"


def test_the_decision_threshold_flag_lands_in_model_json_and_the_summary(
    mlp_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repository"
    code = main(["export", str(mlp_checkpoint), "--repository", str(repository), "--decision-threshold", "0.3"])
    assert code == 0
    manifest = ModelManifest.read(repository / "fraud" / "1")
    assert manifest.prediction == PredictionContract(task="binary", decision_threshold=0.3)
    out = capsys.readouterr().out
    assert (
        "prediction: binary, output 'probability', decision threshold 0.3 (shadow agreement: the same decision)" in out
    )


def test_multiclass_and_regression_exports_record_label_and_a_tenth_of_the_target_spread(
    tasks_repository: Path, regression_checkpoint: Path
) -> None:
    segments = ModelManifest.read(tasks_repository / "segments" / "1")
    assert segments.prediction == PredictionContract(task="multiclass")
    assert segments.prediction_output == "label"
    delivery = ModelManifest.read(tasks_repository / "delivery" / "1")
    assert delivery.prediction is not None and delivery.prediction.task == "regression"
    target_std = float(load_checkpoint(regression_checkpoint).module.target_std)  # minutes
    assert target_std > 1
    assert delivery.prediction.agreement_tolerance == pytest.approx(REGRESSION_AGREEMENT_STD * target_std)
    assert delivery.prediction_output == "prediction"


def test_a_given_regression_tolerance_is_recorded_as_given(regression_checkpoint: Path, tmp_path: Path) -> None:
    result = export_checkpoint(regression_checkpoint, tmp_path, ExportOptions(agreement_tolerance=2.0))
    assert result.manifest.prediction == PredictionContract(task="regression", agreement_tolerance=2.0)
    assert ModelManifest.read(result.version_dir).prediction == result.manifest.prediction


@pytest.mark.parametrize(
    ("checkpoint", "options", "message"),
    [
        ("regression_checkpoint", ExportOptions(decision_threshold=0.3), "--decision-threshold is for binary models"),
        ("mlp_checkpoint", ExportOptions(agreement_tolerance=1.0), "--agreement-tolerance is for regression models"),
    ],
)
def test_options_that_do_not_fit_the_task_are_refused_before_anything_is_written(
    checkpoint: str, options: ExportOptions, message: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with pytest.raises(ExportError, match=message):
        export_checkpoint(request.getfixturevalue(checkpoint), tmp_path, options)
    assert list(tmp_path.iterdir()) == []


def test_a_threshold_that_is_not_a_number_is_refused_by_the_command_line(
    mlp_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", str(mlp_checkpoint), "--repository", str(tmp_path), "--decision-threshold", "nan"])
    assert exited.value.code == 2
    assert "--decision-threshold: must be a finite number, got nan" in capsys.readouterr().err

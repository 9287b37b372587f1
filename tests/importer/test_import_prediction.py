"""`hotserve import` records what the model's answer means (model.json's `prediction`): from
`--task`, or from the task a labelled reference table shows; none, said, when neither tells."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from exporters.imports.pipeline import ImportOptions, import_model
from exporters.shared.checks import REGRESSION_AGREEMENT_STD
from server.cli import main
from server.contract.manifest import ModelManifest, PredictionContract
from tests.importer.conftest import FEATURES, Converted


def _converted(model: object, table: pd.DataFrame, path: Path, classifier: bool = True) -> Path:
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = {"zipmap": False} if classifier else None
        onnx.save(to_onnx(model, table[FEATURES].to_numpy(np.float32)[:1], options=options), str(path))
    return path


@pytest.fixture(scope="module")
def regression(table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LinearRegression predicting `minutes` from the four features, and its labelled table."""
    from sklearn.linear_model import LinearRegression

    folder = tmp_path_factory.mktemp("regression")
    x = table[FEATURES].to_numpy(np.float32)
    minutes = 30 + 8 * x[:, 0] - 3 * x[:, 2] + np.random.default_rng(1).normal(size=len(x))
    labelled = table[FEATURES].assign(minutes=minutes)
    labelled.to_csv(folder / "deliveries.csv", index=False)
    model = LinearRegression().fit(x, minutes)
    return _converted(model, table, folder / "regressor.onnx", classifier=False), folder / "deliveries.csv"


@pytest.fixture(scope="module")
def three_classes(table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A three-class LogisticRegression (classes 0, 1, 2) and its labelled table."""
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("multiclass")
    x = table[FEATURES].to_numpy(np.float32)
    labels = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])
    table[FEATURES].assign(segment=labels).to_csv(folder / "segments.csv", index=False)
    model = LogisticRegression().fit(x, labels)
    return _converted(model, table, folder / "classifier.onnx"), folder / "segments.csv"


def test_a_labelled_reference_table_shows_a_binary_task_recorded_with_the_default_threshold(
    sklearn_pipeline: Converted, reference_csv: Path, tmp_path: Path
) -> None:
    result = import_model(
        sklearn_pipeline.path, tmp_path, ImportOptions(name="scorer", reference=reference_csv, label="label")
    )
    manifest = ModelManifest.read(result.version_dir)
    assert manifest.prediction == PredictionContract(task="binary", decision_threshold=0.5)
    assert manifest.drift is not None and manifest.drift.prediction_output == "probabilities"
    assert manifest.prediction_output == "probabilities"  # named once, by the drift reference


def test_task_and_threshold_flags_land_in_model_json_without_a_reference_table(
    sklearn_pipeline: Converted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["import", str(sklearn_pipeline.path), "--name", "scorer", "--repository", str(tmp_path)]
        + ["--task", "binary", "--decision-threshold", "0.3"]
    )
    assert code == 0, capsys.readouterr().err
    manifest = ModelManifest.read(tmp_path / "scorer" / "1")
    # no drift reference names the prediction output, so the contract does: the first float output
    assert manifest.prediction == PredictionContract(task="binary", output="probabilities", decision_threshold=0.3)
    out = capsys.readouterr().out
    assert (
        "prediction: binary, output 'probabilities', decision threshold 0.3 (shadow agreement: the same decision)"
        in out
    )


def test_without_a_task_or_labels_no_task_is_recorded_and_the_summary_says_what_that_means(
    sklearn_pipeline: Converted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(sklearn_pipeline.path), "--name", "scorer", "--repository", str(tmp_path)]) == 0
    assert ModelManifest.read(tmp_path / "scorer" / "1").prediction is None
    out = capsys.readouterr().out
    assert "note: no task recorded (give --task, or a --reference table with --label)" in out


def test_a_regression_import_records_a_tenth_of_the_labels_spread_or_the_tolerance_given(
    regression: tuple[Path, Path], tmp_path: Path
) -> None:
    model, reference = regression
    labels = pd.read_csv(reference)["minutes"].to_numpy()
    derived = import_model(model, tmp_path, ImportOptions(name="eta", reference=reference, label="minutes"))
    contract = ModelManifest.read(derived.version_dir).prediction
    assert contract is not None and contract.task == "regression"
    assert contract.agreement_tolerance == pytest.approx(REGRESSION_AGREEMENT_STD * float(np.std(labels)))
    assert any(n.startswith(f"agreement tolerance {contract.agreement_tolerance:.4g}: 0.1 x") for n in derived.notes)
    given = import_model(
        model, tmp_path, ImportOptions(name="eta", reference=reference, label="minutes", agreement_tolerance=2.0)
    )
    assert given.manifest.prediction == PredictionContract(task="regression", agreement_tolerance=2.0)


def test_a_multiclass_model_is_recorded_as_its_labels_show_or_as_told(
    three_classes: tuple[Path, Path], tmp_path: Path
) -> None:
    model, reference = three_classes
    shown = import_model(model, tmp_path, ImportOptions(name="segments", reference=reference, label="segment"))
    assert shown.manifest.prediction == PredictionContract(task="multiclass")
    assert shown.manifest.prediction_output == "probabilities"
    told = import_model(model, tmp_path, ImportOptions(name="segments", task="multiclass", prediction_output="label"))
    assert told.manifest.prediction == PredictionContract(task="multiclass", output="label")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "multiclass", "--decision-threshold", "0.3"], "--decision-threshold is for binary models"),
        (["--decision-threshold", "0.3"], "--decision-threshold and --agreement-tolerance belong to a task"),
        (["--task", "regression"], "give --agreement-tolerance (target units), or a --reference table"),
        (["--task", "binary", "--prediction-output", "probabilities"], "a binary prediction is one score per row"),
    ],
)
def test_task_options_that_cannot_hold_exit_1_with_the_reason(
    three_classes: tuple[Path, Path], flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = three_classes
    code = main(["import", str(model), "--name", "segments", "--repository", str(tmp_path), *flags])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "segments" / "1").exists()

"""Tasks beyond binary: labels -> task (inferred and said so), clear refusals, multiclass and regression models."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from server.contract.manifest import TensorSpec
from training.checkpoints import load_checkpoint
from training.config import TrainConfig
from training.datasets import DatasetError, DatasetSpec, load_dataset
from training.datasets.labels import MAX_INFERRED_CLASSES, Labels, encode_labels
from training.distributed import Placement
from training.metrics import evaluate_multiclass, evaluate_regression
from training.models import ClassifierModel, RegressionModel
from training.tasks import Task
from training.trainer import TrainingError, train

TINY = TrainConfig(
    name="tiny", architecture_kwargs={"hidden": [16], "dropout": 0.0}, epochs=4, batch_size=64, lr=0.02, quiet=True
)


def _labels(values: list[object], task: Task | None = None) -> Labels:
    return encode_labels(pd.Series(values), task, "y", "t.csv")


@pytest.mark.parametrize(
    ("values", "task", "why"),
    [
        ([0, 1, 1, 0], "binary", "values 0/1"),
        ([True, False, True], "binary", "values 0/1"),
        (["gold", "silver", "gold", "bronze"], "multiclass", "text values (3 classes)"),
        ([3, 5, 7, 5], "multiclass", "3 distinct whole numbers"),
        ([1.5, 2.25, 3.0], "regression", "fractional numbers"),
        (
            list(range(MAX_INFERRED_CLASSES + 1)),
            "regression",
            f"{MAX_INFERRED_CLASSES + 1} distinct whole numbers (more than {MAX_INFERRED_CLASSES} classes)",
        ),
    ],
)
def test_task_is_inferred_from_the_label_values_and_says_why(values: list[object], task: str, why: str) -> None:
    labels = _labels(values)
    assert labels.task == task
    assert labels.inferred == f"task {task} inferred from label column 'y': {why}"
    assert _labels(values, task).inferred is None  # given, not inferred


def test_multiclass_targets_index_the_sorted_class_names() -> None:
    text = _labels(["gold", "silver", "gold", "bronze"])
    assert text.classes == ["bronze", "gold", "silver"]
    np.testing.assert_array_equal(text.targets, [1, 2, 1, 0])
    codes = _labels([7, 3, 5.0, 3], "multiclass")
    assert codes.classes == [3, 5, 7] and all(type(c) is int for c in codes.classes)
    np.testing.assert_array_equal(codes.targets, [2, 0, 1, 0])


@pytest.mark.parametrize(
    ("values", "task", "message"),
    [
        (
            [0.0, 1.0, 0.5, 2.0],
            "multiclass",
            r"column 'y': multiclass labels must be class names or whole numbers; got 0.5 at row 2 "
            r"\(a numeric target: --task regression\)",
        ),
        (["a", "a", "a"], None, r"column 'y': multiclass labels need at least 2 classes; every row is 'a'"),
        ([1, 1, 1], "multiclass", r"column 'y': multiclass labels need at least 2 classes; every row is 1"),
        ([0, 0, 0], None, r"column 'y': binary labels need at least 2 classes; every row is 0"),
        (["yes", "no"], "binary", r"column 'y': labels must be 0 or 1; got 'yes' at row 0"),
        (["1.5", "fast"], "regression", r"column 'y': regression labels must be numbers; got 'fast' at row 1"),
        ([2.5, 2.5], "regression", r"column 'y': regression target is constant \(every row is 2.5\)"),
        ([1.0, None, 0.0], None, r"column 'y': missing label at row 1 \(1 such rows\)"),
    ],
)
def test_labels_unfit_for_the_task_are_refused_naming_the_column(
    values: list[object], task: str | None, message: str
) -> None:
    with pytest.raises(DatasetError, match=message) as failure:
        _labels(values, task)
    assert failure.value.column == "y"


def test_multiclass_metrics_match_their_definitions() -> None:
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(3), size=50)
    labels = rng.integers(0, 3, size=50)
    predicted = probabilities.argmax(axis=1)
    f1 = []
    for k in range(3):
        tp = sum(int(p == k and y == k) for p, y in zip(predicted, labels))
        precision = tp / max(1, sum(int(p == k) for p in predicted))
        recall = tp / max(1, sum(int(y == k) for y in labels))
        f1.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    expected_loss = -sum(math.log(probabilities[i, y]) for i, y in enumerate(labels)) / 50
    metrics = evaluate_multiclass(probabilities, labels)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(predicted == labels)))
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert metrics["log_loss"] == pytest.approx(expected_loss)


def test_regression_metrics_match_their_definitions() -> None:
    targets = np.array([1.0, 2.0, 4.0, 9.0])
    predictions = np.array([1.5, 2.0, 3.0, 10.0])
    metrics = evaluate_regression(predictions, targets)
    assert metrics["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert metrics["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert metrics["r2"] == pytest.approx(1 - 2.25 / float(np.sum((targets - 4.0) ** 2)))


def test_multiclass_model_keeps_its_classes_and_answers_probabilities_and_label(root: Path) -> None:
    data = load_dataset(DatasetSpec(source="demo:segments", rows=800, seed=1))
    assert (data.task, data.task_note) == ("multiclass", None)  # the demo states its task

    result = train(data, TINY, root)

    meta = result.metadata
    assert meta.task == "multiclass" and meta.classes == ["bargain", "business", "premium", "regular"]
    assert meta.outputs == [
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 4]),
        TensorSpec(name="label", datatype="BYTES", shape=[-1]),
    ]
    assert set(meta.metrics) == {"accuracy", "macro_f1", "log_loss", "train_loss"}
    assert meta.metrics["accuracy"] > 0.5  # four classes: chance is about 0.35
    assert meta.drift.prediction_output == "label"
    assert meta.drift.prediction is not None and meta.drift.prediction.categories == meta.classes
    assert sum(meta.drift.prediction.proportions) == pytest.approx(1.0)
    loaded = load_checkpoint(result.path)
    assert isinstance(loaded.module, ClassifierModel)
    with torch.no_grad():
        probabilities, label = loaded.module(torch.from_numpy(loaded.holdout_inputs["features"]))
    np.testing.assert_allclose(probabilities.sum(dim=1).numpy(), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(label.numpy(), probabilities.argmax(dim=1).numpy())
    assert loaded.holdout_labels.dtype == np.int64
    assert evaluate_multiclass(probabilities.numpy(), loaded.holdout_labels)["accuracy"] == pytest.approx(
        meta.metrics["accuracy"]
    )  # the held-out rows are the whole (small) validation split


def test_regression_model_predicts_in_the_labels_units(root: Path) -> None:
    data = load_dataset(DatasetSpec(source="demo:delivery", rows=800, seed=1))
    result = train(data, TINY, root)

    meta = result.metadata
    assert meta.task == "regression" and meta.classes is None
    assert meta.outputs == [TensorSpec(name="prediction", datatype="FP32", shape=[-1])]
    assert set(meta.metrics) == {"rmse", "mae", "r2", "train_loss"}
    assert meta.metrics["r2"] > 0.3
    assert meta.drift.prediction_output == "prediction"
    loaded = load_checkpoint(result.path)
    assert isinstance(loaded.module, RegressionModel)
    with torch.no_grad():
        predicted = loaded.module(torch.from_numpy(loaded.holdout_inputs["features"])).numpy()
    assert abs(float(predicted.mean()) - float(loaded.holdout_labels.mean())) < 0.5 * float(loaded.holdout_labels.std())
    assert evaluate_regression(predicted, loaded.holdout_labels)["rmse"] == pytest.approx(
        meta.metrics["rmse"], rel=1e-5
    )


def test_csv_of_the_users_own_with_integer_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "grade": np.where(x[:, 0] > 0.5, 7, np.where(x[:, 1] > 0, 5, 3))})
    path = tmp_path / "grades.parquet"
    frame.to_parquet(path)
    data = load_dataset(DatasetSpec(source=str(path), label="grade"))
    result = train(data, TINY, tmp_path / "ck")
    assert result.metadata.classes == [3, 5, 7]
    assert result.metadata.outputs[1] == TensorSpec(name="label", datatype="INT64", shape=[-1])
    assert result.metadata.dataset.task == "multiclass"  # the inferred task is recorded for --resume


def test_resume_refuses_data_of_another_task(root: Path) -> None:
    data = load_dataset(DatasetSpec(source="demo:delivery", rows=300, seed=1))
    parent = load_checkpoint(train(data, replace(TINY, epochs=1), root).path)
    other = load_dataset(DatasetSpec(source="demo:segments", rows=300, seed=1))
    with pytest.raises(TrainingError, match="resumed checkpoint is a regression model"):
        train(other, TINY, root, parent=parent)


def test_a_class_with_one_row_cannot_be_split(root: Path) -> None:
    data = load_dataset(DatasetSpec(source="demo:segments", rows=300, seed=1))
    labels = data.labels.copy()
    labels[labels == 3] = 0
    labels[5] = 3
    with pytest.raises(TrainingError, match="need at least 2 rows of class 'regular'"):
        train(replace(data, labels=labels), TINY, root)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps_train_to_float32_weights(amp: str, root: Path) -> None:
    """The CUDA code path (autocast, and the loss scaler for fp16) exercised on CPU, where torch supports both."""
    data = load_dataset(DatasetSpec(source="demo:delivery", rows=400, seed=2))
    config = replace(TINY, epochs=2)
    plain = train(data, config, root).metadata
    mixed = train(data, config, root, placement=Placement(amp=amp)).metadata
    assert mixed.amp == amp and plain.amp is None
    assert mixed.metrics["rmse"] == pytest.approx(plain.metrics["rmse"], rel=0.05)
    assert mixed.metrics["rmse"] != plain.metrics["rmse"]  # the forward passes really ran in reduced precision
    weights = load_checkpoint(root / "tiny" / "2").module.state_dict()
    assert all(t.dtype in (torch.float32, torch.int64) for t in weights.values())


def test_rows_of_a_world_of_two_are_disjoint_and_cover_the_split() -> None:
    from training.loader import TrainBatches

    inputs, targets = torch.arange(10, dtype=torch.float32).unsqueeze(1), torch.arange(10, dtype=torch.float32)
    seen = []
    for rank in (0, 1):
        batches = TrainBatches(inputs, targets, batch_size=4, seed=0, placement=Placement(rank=rank, world_size=2))
        assert batches.rank_batch_size == 2  # the global batch of 4, halved
        batches.set_epoch(1)
        seen.append([int(v) for _, y in batches for v in y])
    assert sorted(seen[0] + seen[1]) == list(range(10)) and len(seen[0]) == len(seen[1]) == 5
    again = TrainBatches(inputs, targets, batch_size=4, seed=0, placement=Placement(rank=0, world_size=2))
    again.set_epoch(2)
    assert [int(v) for _, y in again for v in y] != seen[0]  # reshuffled per epoch

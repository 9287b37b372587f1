"""A published multiclass model with text labels (`label` BYTES, its drift reference on the class
names) is monitored for prediction drift: the server counts the class mix from `probabilities`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from server.contract.manifest import ONNX_FILENAME, ModelManifest
from server.monitoring.drift import DriftConfig, VersionDrift, plan_drift
from training.checkpoints import load_checkpoint


def test_the_class_mix_of_a_text_label_model_is_compared_with_its_training_reference(
    multiclass_checkpoint: Path, tasks_repository: Path
) -> None:
    version_dir = tasks_repository / "segments" / "1"
    manifest = ModelManifest.read(version_dir)
    plan = plan_drift(manifest)
    assert plan.skipped == []
    assert (plan.prediction_output, plan.prediction_classes) == ("probabilities", True)

    rows = load_checkpoint(multiclass_checkpoint).holdout_inputs["features"]
    session = ort.InferenceSession(str(version_dir / ONNX_FILENAME), providers=["CPUExecutionProvider"])
    probabilities, labels = session.run(None, {"features": rows})
    drift = VersionDrift(manifest, plan, DriftConfig(min_rows=1))
    drift.record({"features": rows}, {"probabilities": probabilities, "label": labels})
    prediction = drift.compute().prediction
    assert prediction is not None and prediction.name == "label" and prediction.values == len(rows)
    classes = list(manifest.drift.prediction.categories or []) if manifest.drift and manifest.drift.prediction else []
    shares = [float(np.mean(labels == name)) for name in classes]
    assert prediction.live_proportions is not None
    assert list(prediction.live_proportions[: len(classes)]) == pytest.approx(shares)  # counted by class name
    assert prediction.psi is not None and prediction.psi < 0.2  # held-out rows look like the training rows

"""Manifests with a prediction contract for the labels and quality tests (no ONNX file: quality
reads `model.json` only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from server.capture.record import CaptureRecord
from server.contract.manifest import (
    DriftReference,
    Lineage,
    ModelManifest,
    PredictionContract,
    ReferenceHistogram,
    TensorSpec,
)


def write_manifest(repository: Path, name: str, version: int, task: str, classes: list[str] | None = None) -> None:
    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    drift = None
    if task == "multiclass":
        outputs = [
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(classes or [0, 1, 2])]),
            TensorSpec(name="label", datatype="BYTES" if classes else "INT64", shape=[-1]),
        ]
        contract = PredictionContract(task="multiclass", output=None if classes else "probabilities")
        if classes:  # as exports write it: the class mix of `label` is the prediction reference
            drift = DriftReference(
                prediction=ReferenceHistogram(
                    name="label",
                    bin_edges=[k - 0.5 for k in range(len(classes) + 1)],
                    proportions=[1 / len(classes)] * len(classes),
                    categories=classes,
                ),
                prediction_output="label",
            )
    elif task == "regression":
        outputs = [TensorSpec(name="prediction", datatype="FP32", shape=[-1])]
        contract = PredictionContract(task="regression", agreement_tolerance=0.1)
    else:
        outputs = [TensorSpec(name="probability", datatype="FP32", shape=[-1])]
        contract = PredictionContract(task="binary", decision_threshold=0.4)
    ModelManifest(
        name=name,
        version=version,
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, 2])],
        outputs=outputs,
        drift=drift,
        lineage=Lineage(architecture="test", metrics={"auc": 0.8, "accuracy": 0.75}),
        onnx_sha256="0" * 64,
        prediction=contract,
    ).write(folder)


def record(
    rid: str,
    row: int,
    version: int,
    outputs: dict[str, float | str | list[float]],
    ts: float,
    model: str = "m",
    shadow_version: int | None = None,
    shadow_outputs: dict[str, float | str | list[float]] | None = None,
) -> CaptureRecord:
    return CaptureRecord(
        request_id=rid,
        row=row,
        ts=datetime.fromtimestamp(ts, UTC),
        model=model,
        version=version,
        protocol="v2",
        inputs={"features": [1.0, 2.0]},
        outputs=outputs,  # type: ignore[arg-type]
        shadow_version=shadow_version,
        shadow_outputs=shadow_outputs,  # type: ignore[arg-type]
    )

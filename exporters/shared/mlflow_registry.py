"""The MLflow Model Registry, both ways (the `mlflow` extra; MLflow is imported here only).

Out: `hotserve export ... --register NAME` logs the published ONNX graph (the ONNX flavour,
with its signature and an input example, and the version's whole model.json beside it as an extra
file) to the training's MLflow run (a new run when the training was not tracked) and registers it
as a new version of NAME, tagged with the hotserve model name and version.

In: `hotserve import models:/NAME@ALIAS` (or `models:/NAME/VERSION`) resolves the registry
version, downloads its artifacts and hands the ONNX file to the importer, with the registry
name, version, alias and run id for the lineage, and the model.json it was registered with (the
importer carries its contract over: `exporters/imports/registered_contract.py`). A registered model
that is not ONNX is refused naming its flavours.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from server.contract.manifest import MANIFEST_FILENAME, NUMPY_DTYPES, ModelManifest, RegistryModelRef
from server.redaction import redacted
from training.tracking import HTTP_RETRIES

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
ARTIFACT_NAME = "model"


class RegistryError(RuntimeError):
    """The registry refused or cannot serve what was asked; the message says what and why."""


@dataclass(frozen=True, slots=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str


@dataclass(frozen=True, slots=True)
class FetchedModel:
    """A registered ONNX model downloaded for import."""

    onnx_path: Path
    ref: RegistryModelRef
    manifest: ModelManifest | None = None
    """The model.json it was registered with; None when it carries none (see `problem`)."""
    problem: str | None = None
    """Why a model.json it carries could not be read."""


def is_models_uri(text: str) -> bool:
    return text.startswith("models:/")


def _client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as error:
        raise RegistryError(f"the mlflow package is not installed ({error}); pip install -e '.[mlflow]'") from None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
    uri = tracking_uri or mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _signature(manifest: ModelManifest) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def specs(tensors: Any) -> Any:
        return Schema([TensorSpec(NUMPY_DTYPES[t.datatype], tuple(t.shape), t.name) for t in tensors])

    return ModelSignature(inputs=specs(manifest.inputs), outputs=specs(manifest.outputs))


def example_inputs(manifest: ModelManifest, rows: int = 2) -> dict[str, np.ndarray]:
    """An input example for the registry: `rows` rows of each input at the centre of its training
    histogram where the drift reference has one, else zeros (text inputs: empty strings)."""
    by_name = {h.name: h for h in manifest.drift.features} if manifest.drift else {}
    columns = manifest.features.columns if manifest.features else []
    example = {}
    for spec in manifest.inputs:
        shape = [rows if i == 0 or d < 0 else d for i, d in enumerate(spec.shape)]
        if spec.datatype == "BYTES":
            example[spec.name] = np.full(shape, "", dtype=object)
            continue
        array = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        if manifest.features is not None and spec.name == manifest.features.input and array.ndim == 2:
            for column, feature in enumerate(columns):
                histogram = by_name.get(feature)
                if histogram is None or column >= array.shape[1]:
                    continue
                categories = histogram.categories
                if categories and isinstance(categories[0], float | int):
                    array[:, column] = float(categories[len(categories) // 2])
                elif len(histogram.bin_edges) >= 2:
                    edges = histogram.bin_edges
                    array[:, column] = (edges[len(edges) // 2 - 1] + edges[len(edges) // 2]) / 2
        example[spec.name] = array
    return example


def register_version(
    onnx_path: Path,
    manifest: ModelManifest,
    registered_name: str,
    input_example: dict[str, np.ndarray],
    tracking_uri: str | None = None,
) -> RegisteredVersion:
    """Log `onnx_path` as an ONNX-flavour model and register it as a new version of `registered_name`."""
    import onnx

    client, uri = _client(tracking_uri)
    import mlflow
    import mlflow.onnx

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    trained_in = manifest.lineage.mlflow_run
    try:
        if trained_in is not None and trained_in.tracking_uri == redacted(uri):
            run_id = trained_in.run_id
        else:
            experiment = client.get_experiment_by_name(f"hotserve-{manifest.name}")
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(f"hotserve-{manifest.name}")
            )
            run_id = client.create_run(
                experiment_id,
                run_name=f"export {manifest.name} v{manifest.version}",
                tags={"hotserve.model": manifest.name, "mlflow.source.name": "hotserve export"},
            ).info.run_id
        with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory(prefix="hotserve-register-") as folder:
            manifest_path = Path(folder) / MANIFEST_FILENAME
            manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n")
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)),
                name=ARTIFACT_NAME,
                signature=_signature(manifest),
                input_example=input_example if len(input_example) > 1 else next(iter(input_example.values())),
                registered_model_name=registered_name,
                extra_files=[str(manifest_path)],
            )
        version = str(info.registered_model_version)
        tags = {
            "hotserve.model": manifest.name,
            "hotserve.version": str(manifest.version),
            "hotserve.onnx_sha256": manifest.onnx_sha256,
        }
        for key, value in tags.items():
            client.set_model_version_tag(registered_name, version, key, value)
    except RegistryError:
        raise
    except Exception as error:
        raise RegistryError(f"MLflow at {redacted(uri)} could not register {registered_name!r}: {error}") from error
    return RegisteredVersion(registered_name, version, run_id)


def fetch_registered(models_uri: str, dest: Path, tracking_uri: str | None = None) -> FetchedModel:
    """Resolve `models:/NAME@ALIAS` or `models:/NAME/VERSION`, check it is ONNX, download it into `dest`."""
    match = MODELS_URI.match(models_uri)
    if match is None:
        raise RegistryError(
            f"{models_uri!r} is not a registry URI: expected models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    name, alias, number = match.group("name"), match.group("alias"), match.group("version")
    client, uri = _client(tracking_uri)
    try:
        found: ModelVersion = (
            client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        )
    except Exception as error:
        raise RegistryError(f"MLflow at {redacted(uri)} has no {models_uri}: {error}") from error
    version = str(found.version)
    try:
        import mlflow.artifacts
        from mlflow.models import Model

        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(dest), tracking_uri=uri
            )
        )
        flavors = Model.load(str(local / "MLmodel")).flavors
    except Exception as error:
        raise RegistryError(
            f"could not download {models_uri} (version {version}) from {redacted(uri)}: {error}"
        ) from error
    if "onnx" not in flavors:
        raise RegistryError(
            f"{models_uri} (version {version}) is not an ONNX model: its flavours are "
            f"{', '.join(sorted(flavors))}; convert it to ONNX (skl2onnx, onnxmltools, torch.onnx) and register that"
        )
    onnx_path = local / str(flavors["onnx"].get("data", "model.onnx"))
    if not onnx_path.is_file():
        raise RegistryError(
            f"{models_uri} (version {version}): its ONNX flavour names {onnx_path.name}, which is missing"
        )
    ref = RegistryModelRef(
        tracking_uri=redacted(uri), name=name, version=version, alias=alias, run_id=found.run_id, source=found.source
    )
    return FetchedModel(onnx_path, ref, *_registered_manifest(local, flavors["onnx"]))


def _registered_manifest(local: Path, flavor: dict[str, Any]) -> tuple[ModelManifest | None, str | None]:
    """The model.json `register_version` stored among the flavour's extra files, and why not."""
    stored = [
        local / str(extra["path"])
        for extra in flavor.get("extra_files") or ()
        if isinstance(extra, dict) and Path(str(extra.get("path", ""))).name == MANIFEST_FILENAME
    ]
    if not stored:
        return None, None
    try:
        return ModelManifest.model_validate_json(stored[0].read_bytes()), None
    except (OSError, ValueError) as error:
        return None, f"its {MANIFEST_FILENAME} cannot be read: {error}"

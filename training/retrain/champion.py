"""The champion: the version serving `production` (asked of the server), its `model.json` from the
repository, and the checkpoint it was exported from (warm start and hyperparameters).

The challenger is exported with the champion's serving options (batching, feature view, decision
threshold or agreement tolerance), so a release compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from exporters.export.options import ExportOptions
from exporters.shared.feast_options import FeastOptions
from server.admin_client import AdminClient, model_path
from server.contract.aliases import PRODUCTION
from server.contract.manifest import ModelManifest
from server.registry.repository import version_dir
from training.checkpoints import METADATA_FILENAME
from training.retrain.table import TableSpec
from training.tasks import Task


class ChampionError(ValueError):
    """The production version cannot be retrained from (says which and why)."""


@dataclass(frozen=True)
class Champion:
    model: str
    version: int
    """The repository version serving `production`."""
    manifest: ModelManifest
    checkpoint: Path
    """Its checkpoint version folder (`checkpoints/<model>/<version>/`)."""

    @property
    def task(self) -> Task:
        if self.manifest.prediction is not None:
            return self.manifest.prediction.task
        task = (self.manifest.lineage.model_extra or {}).get("task", "binary")
        if task not in ("binary", "multiclass", "regression"):
            raise ChampionError(f"{self.model} v{self.version}: lineage names an unknown task {task!r}")
        return task  # type: ignore[no-any-return]

    def table_spec(self) -> TableSpec:
        features = self.manifest.features
        if features is None:
            raise ChampionError(
                f"{self.model} v{self.version} has no feature columns in its model.json: retraining builds its "
                "table from the served features (tabular models)"
            )
        classes = (self.manifest.lineage.model_extra or {}).get("classes")
        return TableSpec(self.model, list(features.columns), features.input, self.task, classes)

    def export_options(self) -> ExportOptions:
        """Publish the challenger as the next free version, served the way the champion is."""
        batching = self.manifest.batching
        options: dict[str, object] = {
            "next_free_when_taken": True,
            "max_batch_size": batching.max_batch_size,
            "max_queue_delay_ms": batching.max_queue_delay_ms,
            "instances": batching.instances,
        }
        prediction = self.manifest.prediction
        if prediction is not None:
            options["decision_threshold"] = prediction.decision_threshold
            options["agreement_tolerance"] = prediction.agreement_tolerance
        view = self.manifest.features.view if self.manifest.features is not None else None
        if view is not None:
            options.update(
                feature_view=view.name,
                feature_max_age_s=view.max_age_s,
                missing_entity=view.on_missing_entity,
                store_unavailable=view.on_unavailable,
                request_overrides=tuple(f.name for f in view.features if f.overridable),
                feature_defaults="training-mean" if any(f.default is not None for f in view.features) else "required",
            )
            if view.feast is not None:
                options["feast"] = FeastOptions(
                    project=view.feast.project,
                    features=tuple(f"{name}={ref}" for name, ref in view.feast.features.items()),
                    join_key_type=view.entity_key_type,
                )
        return ExportOptions(**options)  # type: ignore[arg-type]


def production_version(client: AdminClient, model: str) -> int:
    """The version the server's `production` alias names (AdminError when unreachable or unknown)."""
    doc = client.call("GET", model_path(model))
    version = doc.get("aliases", {}).get(PRODUCTION, doc.get("serving"))
    if not isinstance(version, int):
        raise ChampionError(f"{model} has no production version on the server (aliases {doc.get('aliases')})")
    return version


def find_champion(model: str, version: int, repository: Path, checkpoints: Path) -> Champion:
    """`version`'s manifest and the checkpoint folder it was exported from."""
    folder = version_dir(repository, model, version)
    try:
        manifest = ModelManifest.read(folder)
    except (OSError, ValidationError) as error:
        raise ChampionError(f"{model} v{version}: cannot read {folder}/model.json: {error}") from None
    lineage = manifest.lineage
    trained = (lineage.model_extra or {}).get("version")
    candidates = []
    if isinstance(trained, int):
        candidates.append(checkpoints / model / str(trained))
    if lineage.checkpoint:
        candidates.append(Path(lineage.checkpoint))
    for candidate in candidates:
        if (candidate / METADATA_FILENAME).is_file():
            return Champion(model, version, manifest, candidate)
    if manifest.imported_from is not None:
        raise ChampionError(
            f"{model} v{version} was imported ({manifest.imported_from.file}): no checkpoint to retrain"
        )
    looked = ", ".join(str(c) for c in candidates) or "nowhere (its lineage names no checkpoint)"
    raise ChampionError(f"{model} v{version}: its checkpoint is not found; looked in {looked} (give --checkpoints)")

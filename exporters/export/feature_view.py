"""The feature view `model.json` carries: the checkpoint's view (written by training from the
dataset's schema) with the operator's export choices applied, and a version that never lets a
changed definition read keys stored for an older one.

Version: `--feature-view-version` if given; otherwise the version the repository already uses
for this view name when the stored data's shape (entity key and its type, feature names and
types) is unchanged, or one past the highest used when it changed; 1 for a new name.
"""

from __future__ import annotations

from pathlib import Path

from exporters.errors import ExportError
from exporters.export.options import ExportOptions
from exporters.shared.feast_options import with_feast
from server.contract.manifest import FeatureSpec, FeatureView, StoredFeature
from server.features.service import repository_views
from training.checkpoints import CheckpointMetadata


def _stored_shape(view: FeatureView) -> tuple[object, ...]:
    return (view.entity_key, view.entity_key_type, sorted((f.name, f.datatype) for f in view.features))


def _base_view(spec: FeatureSpec, name: str) -> FeatureView:
    """The checkpoint's view; for checkpoints older than feature views, one built from the spec."""
    if spec.view is not None:
        return spec.view
    assert spec.entity_key is not None  # FeatureSpec requires it with store features
    return FeatureView(
        name=name,
        entity_key=spec.entity_key,
        features=[StoredFeature(name=f, default=spec.defaults.get(f)) for f in spec.store_features],
    )


def _training_means(metadata: CheckpointMetadata) -> dict[str, float]:
    transform = metadata.preprocessing
    if transform is None:
        raise ExportError("--feature-defaults training-mean: the checkpoint records no training statistics")
    means = {c.name: c.mean for c in transform.numeric}
    means.update({c.name: c.categories[0] for c in transform.categorical})
    return means


def next_version(view: FeatureView, repository: Path) -> int:
    used = [v for v in repository_views(repository).values() if v.name == view.name]
    same = [v.version for v in used if _stored_shape(v) == _stored_shape(view)]
    if same:
        return max(same)
    return max((v.version for v in used), default=0) + 1


def export_feature_spec(metadata: CheckpointMetadata, options: ExportOptions, repository: Path) -> FeatureSpec | None:
    """`model.json`'s `features`: the checkpoint's spec with its view finished for serving."""
    spec = metadata.features
    if spec is None or not spec.store_features:
        return spec
    view = _base_view(spec, options.feature_view or metadata.name)
    store = set(spec.store_features)
    overrides = store if options.request_overrides == ("all",) else set(options.request_overrides)
    unknown = sorted(overrides - store)
    if unknown:
        raise ExportError(f"--request-overrides {unknown}: not stored features of this model ({sorted(store)})")
    means = _training_means(metadata) if options.feature_defaults == "training-mean" else {}
    features = [
        f.model_copy(
            update={"overridable": f.overridable or f.name in overrides, "default": means.get(f.name, f.default)}
        )
        for f in view.features
    ]
    view = view.model_copy(
        update={
            "name": options.feature_view or view.name,
            "features": features,
            "max_age_s": options.feature_max_age_s if options.feature_max_age_s is not None else view.max_age_s,
            "on_missing_entity": options.missing_entity,
            "on_unavailable": options.store_unavailable,
        }
    )
    version = options.feature_view_version or next_version(view, repository)
    # Validate the finished view (model_copy does not).
    view = FeatureView.model_validate({**view.model_dump(), "version": version})
    return with_feast(spec.model_copy(update={"view": view}), options.feast, view.name)

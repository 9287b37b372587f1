"""`--feast-*` options of `hotserve export` and `hotserve import`: a view read from Feast's Redis.

The stored features of the model are then the ones `feast materialize` wrote: the view gets a
`feast` source (`server/contract/manifest.py`, `FeastSource`) naming the Feast project (from
`--feast-repo`'s `feature_store.yaml`, or `--feast-project`), the Feast feature view(s) each
feature is read from, and the join key's Feast value type. A repository configured with an entity
key serialization other than version 3, or an online store other than Redis, is refused here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from exporters.errors import ExportError
from server.contract.manifest import FEAST_SERIALIZATION_VERSION, FeastSource, FeatureSpec, FeatureView, StoredFeature

FEAST_CONFIG = "feature_store.yaml"


@dataclass(frozen=True)
class FeastOptions:
    repo: Path | None = None
    """A Feast feature repository (the folder of `feature_store.yaml`, or the file)."""
    project: str | None = None
    view: str | None = None
    """Feast feature view every stored feature is read from, under its own name."""
    features: tuple[str, ...] = ()
    """`NAME=VIEW:FEATURE` overrides: hotserve feature NAME is Feast's VIEW:FEATURE."""
    join_key_type: Literal["STRING", "INT64"] | None = None
    """The join key's Feast value type; None: the view's `entity_key_type`."""

    @property
    def enabled(self) -> bool:
        return bool(self.repo or self.project or self.view or self.features)


def read_feast_repo(path: Path) -> tuple[str, int]:
    """(project, entity key serialization version) of a Feast repository; ExportError if hotserve
    cannot read what it materializes."""
    config = path / FEAST_CONFIG if path.is_dir() else path
    try:
        doc: Any = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ExportError(f"--feast-repo: cannot read {config}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("project"), str):
        raise ExportError(f"--feast-repo: {config} names no project")
    online = doc.get("online_store")
    kind = online.get("type") if isinstance(online, dict) else online
    if kind != "redis":
        raise ExportError(
            f"--feast-repo: {config} has online_store type {kind!r}; hotserve reads Feast's redis online store only"
        )
    if isinstance(online, dict) and online.get("redis_type", "redis") != "redis":
        raise ExportError(f"--feast-repo: redis_type {online['redis_type']!r} is not supported (plain redis only)")
    version = doc.get("entity_key_serialization_version", FEAST_SERIALIZATION_VERSION)
    if version != FEAST_SERIALIZATION_VERSION:
        raise ExportError(
            f"--feast-repo: {config} sets entity_key_serialization_version {version}; hotserve reads "
            f"version {FEAST_SERIALIZATION_VERSION} only (Feast 0.38 and later, the default since 0.50): "
            "set it to 3 and materialize again"
        )
    return doc["project"], version


def feast_source(options: FeastOptions, feature_names: list[str]) -> FeastSource:
    """The `feast` source of a view with these features, from the options; ExportError if incomplete."""
    project, version = options.project, FEAST_SERIALIZATION_VERSION
    if options.repo is not None:
        project, version = read_feast_repo(options.repo)
        if options.project is not None and options.project != project:
            raise ExportError(f"--feast-project {options.project!r} is not {options.repo}'s project {project!r}")
    if project is None:
        raise ExportError("Feast features need a project: give --feast-repo or --feast-project")
    refs: dict[str, str] = {}
    for item in options.features:
        name, sep, ref = item.partition("=")
        if not sep or name not in feature_names:
            raise ExportError(f"--feast-feature {item!r}: expected NAME=VIEW:FEATURE with NAME one of {feature_names}")
        refs[name] = ref
    unmapped = [name for name in feature_names if name not in refs]
    if unmapped and options.view is None:
        raise ExportError(f"stored features {unmapped} have no Feast view: give --feast-view or --feast-feature")
    refs.update({name: f"{options.view}:{name}" for name in unmapped})
    try:
        return FeastSource(
            project=project,
            features={name: refs[name] for name in feature_names},
            entity_key_serialization_version=version,
        )
    except ValidationError as exc:
        raise ExportError("; ".join(str(e["msg"]) for e in exc.errors())) from None


def with_feast(spec: FeatureSpec | None, options: FeastOptions, default_view_name: str) -> FeatureSpec | None:
    """`spec` with its view read from Feast, as the options say (unchanged when none is given)."""
    if not options.enabled:
        return spec
    if spec is None or not spec.store_features or spec.entity_key is None:
        raise ExportError("--feast-* options need a model with stored features and an entity key")
    view = spec.view or FeatureView(
        name=default_view_name,
        entity_key=spec.entity_key,
        features=[StoredFeature(name=name, default=spec.defaults.get(name)) for name in spec.store_features],
    )
    source = feast_source(options, [f.name for f in view.features])
    key_type = options.join_key_type or view.entity_key_type
    try:
        view = FeatureView.model_validate({**view.model_dump(), "entity_key_type": key_type, "feast": source})
    except ValidationError as exc:
        raise ExportError("; ".join(str(e["msg"]) for e in exc.errors())) from None
    return spec.model_copy(update={"view": view})


def add_feast_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Feast (stored features that `feast materialize` wrote to Redis)")
    group.add_argument("--feast-repo", type=Path, default=None, help="Feast repository (its feature_store.yaml)")
    group.add_argument("--feast-project", default=None, help="Feast project (default: --feast-repo's)")
    group.add_argument("--feast-view", default=None, help="Feast feature view the stored features are read from")
    group.add_argument(
        "--feast-feature",
        action="append",
        default=[],
        metavar="NAME=VIEW:FEATURE",
        help="stored feature NAME is Feast's VIEW:FEATURE (repeatable; overrides --feast-view)",
    )
    group.add_argument(
        "--feast-join-key-type",
        choices=["STRING", "INT64"],
        default=None,
        help="Feast value type of the entity join key (default: the view's entity key type)",
    )


def feast_options(args: argparse.Namespace) -> FeastOptions:
    return FeastOptions(
        repo=args.feast_repo,
        project=args.feast_project,
        view=args.feast_view,
        features=tuple(args.feast_feature),
        join_key_type=args.feast_join_key_type,
    )

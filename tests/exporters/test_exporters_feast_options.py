"""`--feast-*` options: a view's Feast source from `feature_store.yaml`, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from exporters.errors import ExportError
from exporters.shared.feast_options import FeastOptions, with_feast
from server.contract.manifest import FeastSource, FeatureSpec, FeatureView, StoredFeature

REDIS_STORE = "online_store:\n  type: redis\n  connection_string: '127.0.0.1:6379,db=5'\n"


def _repo(tmp_path: Path, text: str) -> Path:
    (tmp_path / "feature_store.yaml").write_text(text)
    return tmp_path


def _spec() -> FeatureSpec:
    return FeatureSpec(
        input="x",
        columns=["amount", "conv_rate", "trips"],
        request_features=["amount"],
        store_features=["conv_rate", "trips"],
        entity_key="driver_id",
    )


def test_the_project_comes_from_the_repository_and_features_from_the_named_views(tmp_path: Path) -> None:
    repo = _repo(tmp_path, f"project: shop\nprovider: local\n{REDIS_STORE}entity_key_serialization_version: 3\n")
    options = FeastOptions(repo=repo, view="driver_stats", features=("trips=driver_extra:trip_count",))
    spec = with_feast(_spec(), options, "drivers")
    assert spec is not None and spec.view is not None
    assert spec.view.name == "drivers" and spec.view.entity_key == "driver_id"
    assert spec.view.feast == FeastSource(
        project="shop", features={"conv_rate": "driver_stats:conv_rate", "trips": "driver_extra:trip_count"}
    )
    assert spec.view.feast.feature_views == ["driver_stats", "driver_extra"]


def test_the_join_key_type_sets_the_views_entity_key_type() -> None:
    options = FeastOptions(project="shop", view="driver_stats", join_key_type="INT64")
    spec = with_feast(_spec(), options, "drivers")
    assert spec is not None and spec.view is not None and spec.view.entity_key_type == "INT64"


def test_an_older_serialization_version_is_refused_naming_it(tmp_path: Path) -> None:
    repo = _repo(tmp_path, f"project: shop\n{REDIS_STORE}entity_key_serialization_version: 2\n")
    with pytest.raises(ExportError, match="sets entity_key_serialization_version 2; hotserve reads version 3 only"):
        with_feast(_spec(), FeastOptions(repo=repo, view="driver_stats"), "drivers")


def test_an_online_store_other_than_redis_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "project: shop\nonline_store:\n  type: sqlite\n")
    with pytest.raises(ExportError, match="online_store type 'sqlite'; hotserve reads Feast's redis online store"):
        with_feast(_spec(), FeastOptions(repo=repo, view="driver_stats"), "drivers")


def test_features_without_a_feast_view_and_unknown_names_are_refused() -> None:
    with pytest.raises(ExportError, match=r"stored features \['conv_rate'\] have no Feast view"):
        with_feast(_spec(), FeastOptions(project="shop", features=("trips=v:trips",)), "drivers")
    with pytest.raises(ExportError, match="--feast-feature 'age=v:age': expected NAME=VIEW:FEATURE"):
        with_feast(_spec(), FeastOptions(project="shop", view="v", features=("age=v:age",)), "drivers")


def test_no_feast_options_leave_the_spec_alone() -> None:
    spec = _spec()
    assert with_feast(spec, FeastOptions(), "drivers") is spec


def test_model_json_refuses_another_serialization_version_and_unmapped_features() -> None:
    with pytest.raises(ValidationError, match="entity_key_serialization_version 2 is not supported"):
        FeastSource(project="shop", features={"a": "v:a"}, entity_key_serialization_version=2)
    with pytest.raises(ValidationError, match="feast.features must map exactly the view's features"):
        FeatureView(
            name="d",
            entity_key="driver_id",
            features=[StoredFeature(name="a"), StoredFeature(name="b")],
            feast=FeastSource(project="shop", features={"a": "v:a"}),
        )

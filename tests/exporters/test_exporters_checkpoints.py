"""Refusing checkpoints that cannot be exported: missing, corrupt, inconsistent — with a clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporters.errors import CheckpointUnusable
from exporters.export.pipeline import export_checkpoint
from exporters.export.source import resolve_checkpoint


@pytest.fixture
def copied(mlp_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the mlp checkpoint, `<tmp>/checkpoints/fraud/1`, safe to damage."""
    target = tmp_path / "checkpoints" / "fraud" / "1"
    shutil.copytree(mlp_checkpoint, target)
    return target


def test_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "checkpoints" / "fraud" / "7"
    with pytest.raises(CheckpointUnusable, match=f"checkpoint {missing}: no such file or directory"):
        export_checkpoint(missing, tmp_path / "repository")
    assert not (tmp_path / "repository").exists()


def test_a_file_is_not_a_checkpoint(copied: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointUnusable, match="is a file; expected a version folder"):
        export_checkpoint(copied / "checkpoint.pt", tmp_path / "repository")


def test_garbage_weights_file_is_refused(copied: Path, tmp_path: Path) -> None:
    (copied / "checkpoint.pt").write_bytes(b"\x00not a torch file\xff" * 10)
    with pytest.raises(CheckpointUnusable, match="corrupt checkpoint.pt") as failure:
        export_checkpoint(copied, tmp_path / "repository")
    assert failure.value.path == copied
    assert not (tmp_path / "repository").exists()


def test_missing_weights_file_is_refused(copied: Path, tmp_path: Path) -> None:
    (copied / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointUnusable, match="checkpoint.pt not found"):
        export_checkpoint(copied, tmp_path / "repository")


def test_metadata_that_is_not_json_is_refused(copied: Path, tmp_path: Path) -> None:
    (copied / "metadata.json").write_text("{ this is not json")
    with pytest.raises(CheckpointUnusable, match="bad metadata.json"):
        export_checkpoint(copied, tmp_path / "repository")


def test_metadata_with_an_invalid_field_names_the_field(copied: Path, tmp_path: Path) -> None:
    metadata = json.loads((copied / "metadata.json").read_text())
    metadata["version"] = 0
    (copied / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointUnusable, match="bad metadata.json: version:"):
        export_checkpoint(copied, tmp_path / "repository")


def test_model_folder_means_its_latest_version(copied: Path) -> None:
    second = copied.parent / "2"
    shutil.copytree(copied, second)
    metadata = json.loads((second / "metadata.json").read_text())
    metadata["version"] = 2
    (second / "metadata.json").write_text(json.dumps(metadata))
    (copied.parent / ".staging-abc").mkdir()  # a half-written training run is not a version

    assert resolve_checkpoint(copied.parent) == second
    assert resolve_checkpoint(copied) == copied


def test_model_folder_without_versions_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "checkpoints" / "fraud"
    empty.mkdir(parents=True)
    with pytest.raises(CheckpointUnusable, match="holds no checkpoint versions"):
        resolve_checkpoint(empty)

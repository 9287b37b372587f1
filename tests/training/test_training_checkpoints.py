"""Checkpoint versions: next free number, atomic folders, never overwritten or reused; clear load errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoints import (
    CHECKPOINT_FILENAME,
    METADATA_FILENAME,
    CheckpointError,
    CheckpointMetadata,
    latest_checkpoint,
    load_checkpoint,
    read_metadata,
    write_checkpoint,
)
from training.trainer import TrainResult


def _writer(template: CheckpointMetadata, marker: float):
    """write_checkpoint arguments that store `marker` so each folder's writer can be identified."""
    payload = {"format": 1, "marker": torch.tensor([marker])}

    def describe(version: int) -> CheckpointMetadata:
        return template.model_copy(update={"version": version, "name": "race"})

    return payload, describe


def test_versions_increment_from_one(trained: TrainResult, root: Path) -> None:
    paths = [write_checkpoint(root, "race", *_writer(trained.metadata, i)) for i in range(3)]
    assert [p.name for p in paths] == ["1", "2", "3"]
    assert [read_metadata(p).version for p in paths] == [1, 2, 3]


def test_existing_version_is_never_overwritten(trained: TrainResult, root: Path) -> None:
    first = write_checkpoint(root, "race", *_writer(trained.metadata, 1.0))
    before = (first / CHECKPOINT_FILENAME).read_bytes(), (first / METADATA_FILENAME).read_bytes()
    second = write_checkpoint(root, "race", *_writer(trained.metadata, 2.0))
    assert second.name == "2"
    assert ((first / CHECKPOINT_FILENAME).read_bytes(), (first / METADATA_FILENAME).read_bytes()) == before


def test_deleted_newest_version_number_is_not_reused(trained: TrainResult, root: Path) -> None:
    write_checkpoint(root, "race", *_writer(trained.metadata, 1.0))
    newest = write_checkpoint(root, "race", *_writer(trained.metadata, 2.0))
    for file in newest.iterdir():
        file.unlink()
    newest.rmdir()
    assert write_checkpoint(root, "race", *_writer(trained.metadata, 3.0)).name == "3"


def test_racing_writers_each_get_their_own_version(trained: TrainResult, root: Path) -> None:
    writers = 6
    barrier = threading.Barrier(writers)
    results: dict[int, Path] = {}
    errors: list[BaseException] = []

    def write(marker: int) -> None:
        payload, describe = _writer(trained.metadata, float(marker))
        barrier.wait()
        try:
            results[marker] = write_checkpoint(root, "race", payload, describe)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(int(p.name) for p in results.values()) == list(range(1, writers + 1))
    for marker, path in results.items():
        stored = torch.load(path / CHECKPOINT_FILENAME, weights_only=True)
        assert float(stored["marker"][0]) == marker  # no folder holds another writer's payload
        assert read_metadata(path).version == int(path.name)
    assert sorted(p.name for p in (root / "race").iterdir() if not p.name.startswith(".")) == [
        str(v) for v in range(1, writers + 1)
    ]
    assert not [p for p in (root / "race").iterdir() if p.name.startswith(".staging-")]


def test_latest_checkpoint_is_highest_complete_version(trained: TrainResult, root: Path) -> None:
    assert latest_checkpoint(root, "race") is None
    for i in range(2):
        write_checkpoint(root, "race", *_writer(trained.metadata, float(i)))
    (root / "race" / ".staging-leftover").mkdir()
    (root / "race" / "7").mkdir()  # no metadata.json: not a checkpoint
    assert latest_checkpoint(root, "race") == root / "race" / "2"


def test_loaded_checkpoint_reproduces_training_outputs(trained: TrainResult) -> None:
    loaded = load_checkpoint(trained.path)
    assert not loaded.module.training
    assert loaded.metadata == trained.metadata
    rows = loaded.holdout_inputs["features"]
    assert rows.dtype == np.float32 and rows.shape[1] == len(loaded.metadata.features.columns)
    assert loaded.holdout_labels.shape == (rows.shape[0],)
    with torch.no_grad():
        probabilities = loaded.module(torch.from_numpy(rows)).numpy()
    assert probabilities.shape == (rows.shape[0],)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def _copy(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for name in (CHECKPOINT_FILENAME, METADATA_FILENAME):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def test_missing_folder_is_refused_by_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="folder not found") as info:
        load_checkpoint(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_missing_files_are_named(trained: TrainResult, tmp_path: Path) -> None:
    no_weights = _copy(trained.path, tmp_path / "a")
    (no_weights / CHECKPOINT_FILENAME).unlink()
    with pytest.raises(CheckpointError, match=f"{CHECKPOINT_FILENAME} not found"):
        load_checkpoint(no_weights)
    no_metadata = _copy(trained.path, tmp_path / "b")
    (no_metadata / METADATA_FILENAME).unlink()
    with pytest.raises(CheckpointError, match=f"{METADATA_FILENAME} not found"):
        load_checkpoint(no_metadata)


def test_garbage_weights_are_reported_corrupt(trained: TrainResult, tmp_path: Path) -> None:
    broken = _copy(trained.path, tmp_path / "c")
    (broken / CHECKPOINT_FILENAME).write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match=f"corrupt {CHECKPOINT_FILENAME}"):
        load_checkpoint(broken)


def test_bad_metadata_names_the_field(trained: TrainResult, tmp_path: Path) -> None:
    broken = _copy(trained.path, tmp_path / "d")
    text = (broken / METADATA_FILENAME).read_text().replace('"version": 1', '"version": "one"')
    (broken / METADATA_FILENAME).write_text(text)
    with pytest.raises(CheckpointError, match="bad metadata.json: version"):
        load_checkpoint(broken)
    (broken / METADATA_FILENAME).write_text("{ truncated")
    with pytest.raises(CheckpointError, match="bad metadata.json"):
        load_checkpoint(broken)


def test_weights_of_another_shape_are_refused(trained: TrainResult, tmp_path: Path) -> None:
    broken = _copy(trained.path, tmp_path / "e")
    text = (
        (broken / METADATA_FILENAME).read_text().replace('"hidden": [\n      8\n    ]', '"hidden": [\n      9\n    ]')
    )
    assert '"hidden": [\n      9' in text
    (broken / METADATA_FILENAME).write_text(text)
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'mlp'"):
        load_checkpoint(broken)

"""The load tests train the demo models they need into their own folder: `--repository` pointing
at a user's model repository never adds versions to a `checkpoints/` beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from load_tests import demo_models
from load_tests.benchmark import CHECKPOINTS, RESULTS


def test_demo_models_are_trained_into_the_load_tests_own_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "user"
    repository = user / "model_repository"
    commands: list[list[str]] = []

    def run(argv: list[str], check: bool) -> subprocess.CompletedProcess[Any]:
        """Records each `hotserve` command; an export publishes the next version folder."""
        commands.append(argv)
        if argv[1] == "export":
            model = repository / "fraud"
            (model / str(len(list(model.glob("*"))) + 1)).mkdir(parents=True)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", run)  # what benchmark.py and demo_models.py call
    assert demo_models.demo_repository(repository, "fraud", versions=2) == [1, 2]
    trains = [c for c in commands if c[1] == "train"]
    exports = [c for c in commands if c[1] == "export"]
    assert len(trains) == len(exports) == 2
    assert all(c[c.index("--checkpoints") + 1] == str(CHECKPOINTS) for c in trains)
    assert all(c[2] == str(CHECKPOINTS / "fraud") for c in exports)
    assert CHECKPOINTS.parent == RESULTS
    assert sorted(p.name for p in user.iterdir()) == ["model_repository"]  # no user/checkpoints

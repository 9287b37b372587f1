"""The repository a load run serves: the demo models, trained and exported when missing, with as
many versions as the run needs (the operator releases a second version of the demo MLP), and
a fresh control state that starts each run with `production` on the oldest version.

A second version is a second training run with the same data and seed: training is
deterministic, so the versions answer identically, and a shadow comparison at a tight
tolerance agrees; the rehearsal exercises the release mechanics, not a model change.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from load_tests.benchmark import BIN, CHECKPOINTS, MODELS, prepare_repository
from server.contract.aliases import PRODUCTION
from server.registry.control_state import ControlSnapshot, ModelControl
from server.registry.repository import model_versions


def demo_repository(repository: Path, model: str, versions: int, checkpoints: Path = CHECKPOINTS) -> list[int]:
    """`repository` holding at least `versions` versions of demo `model` (training into
    `checkpoints` and exporting what is missing: needs the `train` extra); returns its versions."""
    if model not in MODELS:
        found = model_versions(repository / model)
        if not found:
            raise SystemExit(
                f"{repository}/{model}: no versions, and {model!r} is not a demo model "
                f"({', '.join(MODELS)}) that could be trained"
            )
        return found
    prepare_repository(repository, [model], checkpoints)
    while len(model_versions(repository / model)) < versions:
        print(f"== training and exporting another version of {model!r} into {repository}", flush=True)
        subprocess.run(
            [
                str(BIN / "hotserve"),
                "train",
                "--name",
                model,
                "--quiet",
                "--checkpoints",
                str(checkpoints),
                *MODELS[model],
            ],
            check=True,
        )
        subprocess.run(
            [str(BIN / "hotserve"), "export", str(checkpoints / model), "--repository", str(repository)], check=True
        )
    return model_versions(repository / model)


def fresh_control_state(path: Path, model: str, production: int) -> Path:
    """A control state naming only `production`, so a run does not inherit an earlier run's aliases."""
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot = ControlSnapshot(revision=1, models={model: ModelControl(aliases={PRODUCTION: production})})
    path.write_text(snapshot.model_dump_json())
    return path

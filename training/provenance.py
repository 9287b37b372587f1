"""Where a training run came from: git state and library versions for checkpoint lineage."""

from __future__ import annotations

import subprocess
from pathlib import Path

from server.contract import provenance

GIT_TIMEOUT_S = 10.0


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(directory: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the git work tree holding `directory`; (None, None) outside one.

    Dirty means tracked files differ from HEAD; untracked files (datasets, checkpoints
    written next to the code) do not count.
    """
    commit = _git(["rev-parse", "--verify", "HEAD"], directory)
    if commit is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], directory)
    return commit.strip(), (None if status is None else bool(status.strip()))


TRAINING_LIBRARIES = ("torch", "numpy")
"""What shapes the trained weights (with python), recorded in checkpoint lineage."""


def library_versions() -> dict[str, str]:
    """Versions of torch, numpy and python for checkpoint lineage."""
    return provenance.library_versions(TRAINING_LIBRARIES)

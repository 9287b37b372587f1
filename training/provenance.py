"""Where a training run came from: git state, library versions and UTC timestamps for checkpoint lineage."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

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


def library_versions() -> dict[str, str]:
    """Versions of what shapes the trained weights: torch, numpy and python."""
    import numpy
    import torch

    return {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def utc_now() -> str:
    """Current UTC time, ISO 8601 with offset."""
    return datetime.now(UTC).isoformat(timespec="seconds")

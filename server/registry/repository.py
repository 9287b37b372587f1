"""The model repository on disk: which `<repo>/<model>/<version>/` folders exist (control path).

Only folders count: a model folder whose name is a valid model name, holding version
folders named by positive integers. Anything else (hidden folders such as `.hotserve/`,
an exporter's half-written `.tmp-*` folder, stray files, `v2`, `0`, `007`) is skipped, so a
version becomes visible only once its folder has its final name.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from server.registry.manifest import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_VERSION = re.compile(r"^[1-9][0-9]*$")


def scan_repository(root: Path) -> dict[str, list[int]]:
    """Model name -> its versions, ascending, for every model with at least one version folder.

    Raises FileNotFoundError when `root` is not a folder: a mistyped repository path must
    stop the server, not start it serving nothing.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a folder")
    models: dict[str, list[int]] = {}
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        if not _MODEL_NAME.match(model_dir.name):
            log.warning("skipping %s: not a valid model name", model_dir)
            continue
        versions = model_versions(model_dir)
        if versions:
            models[model_dir.name] = versions
        else:
            log.warning("skipping %s: no version folders (positive integer names)", model_dir)
    return models


def model_versions(model_dir: Path) -> list[int]:
    """Version numbers of one model folder, ascending ([] when the folder does not exist)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(d.name) for d in model_dir.iterdir() if d.is_dir() and _VERSION.match(d.name))


def version_dir(root: Path, name: str, version: int) -> Path:
    """Folder of one model version inside the repository."""
    return root / name / str(version)

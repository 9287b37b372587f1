"""The model repository on disk: which `<repo>/<model>/<version>/` folders exist (control path).

Only folders count: a model folder whose name is a valid model name, holding version
folders named by positive integers. Anything else (hidden folders such as `.hotserve/`,
an exporter's half-written `.tmp-*` folder, stray files, `v2`, `0`, `007`) is skipped, so a
version becomes visible only once its folder has its final name. A symlink whose target lies
outside the repository is skipped too: the admin API names models and versions only among
what this scan found, so nothing it names can lead out of the repository.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from server.contract.manifest import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_VERSION = re.compile(r"^[1-9][0-9]*$")


@dataclass(frozen=True, slots=True)
class Rescan:
    """Versions a repository scan found new, and versions whose folders are gone."""

    added: list[tuple[str, int]]
    removed: list[tuple[str, int]]

    def describe(self) -> str:
        return f"added {_names(self.added)}; removed {_names(self.removed)}"


def compare_scan(found: Mapping[str, list[int]], known: Mapping[str, Iterable[int]]) -> Rescan:
    """What a new scan (`found`) adds to and removes from the versions `known` before."""
    added = [(name, v) for name, versions in found.items() for v in versions if v not in set(known.get(name, ()))]
    removed = [(name, v) for name, versions in known.items() for v in versions if v not in found.get(name, [])]
    return Rescan(added, removed)


def _names(versions: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} v{version}" for name, version in versions) or "nothing"


def scan_repository(root: Path) -> dict[str, list[int]]:
    """Model name -> its versions, ascending, for every model with at least one version folder.

    Raises FileNotFoundError when `root` is not a folder: a mistyped repository path must
    stop the server, not start it serving nothing.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a folder")
    real_root = root.resolve()
    models: dict[str, list[int]] = {}
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        if not _MODEL_NAME.match(model_dir.name):
            log.warning("skipping %s: not a valid model name", model_dir)
            continue
        if not inside(model_dir, real_root):
            log.warning("skipping %s: a symlink out of the model repository", model_dir)
            continue
        versions = model_versions(model_dir, real_root)
        if versions:
            models[model_dir.name] = versions
        else:
            log.warning("skipping %s: no version folders (positive integer names)", model_dir)
    return models


def model_versions(model_dir: Path, real_root: Path | None = None) -> list[int]:
    """Version numbers of one model folder, ascending ([] when the folder does not exist); with
    `real_root`, only folders that lie within it once symlinks are resolved."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(d.name)
        for d in model_dir.iterdir()
        if d.is_dir() and _VERSION.match(d.name) and (real_root is None or inside(d, real_root))
    )


def inside(path: Path, real_root: Path) -> bool:
    """Whether `path`, symlinks resolved, lies within `real_root` (itself resolved)."""
    return path.resolve().is_relative_to(real_root)


def version_dir(root: Path, name: str, version: int) -> Path:
    """Folder of one model version inside the repository."""
    return root / name / str(version)

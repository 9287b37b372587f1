"""Publishing into the model repository: `<repo>/<model>/<version>/` appears complete or not at all.

A version is assembled in a hidden staging folder next to its final place (same file
system, so the final `os.rename` is atomic) and renamed into place; the server's scan
never sees a half-written version. Published versions are never overwritten. Both
pipelines end in `publish_version`: model.json written, opened by the server's loader and
warmed up (`server_check`), then renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from exporters.errors import ExportError, VersionExists
from exporters.shared.server_check import check_server_loads
from server.contract.manifest import MANIFEST_FILENAME, ModelManifest
from server.registry.repository import model_versions

STAGING_PREFIX = ".staging-"
"""Hidden, non-numeric names: the server's repository scan (`scan_repository`) skips them."""


def ensure_absent(target: Path) -> None:
    """Raise VersionExists if `target` (a version folder) already exists, even empty."""
    if target.exists() or target.is_symlink():
        raise VersionExists(target)


def next_version(repository: Path, name: str) -> int:
    """The number after the highest version of `name` in the repository (1 for a new model)."""
    return max(model_versions(repository / name), default=0) + 1


def is_published(target: Path) -> bool:
    """Whether `target` holds a published version (its model.json), not merely a folder of that name."""
    return (target / MANIFEST_FILENAME).is_file()


class VersionStaging:
    """A staging folder for one version; `publish()` renames it into place.

    Used as a context manager: leaving the block without publishing (an error, a parity
    failure) deletes the staging folder, and the model folder if this export created it,
    so failed exports leave nothing behind.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path: Path | None = None
        self._created_model_dir = False

    def __enter__(self) -> VersionStaging:
        ensure_absent(self.target)
        try:
            self._created_model_dir = not self.target.parent.exists()
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{self.target.name}-", dir=self.target.parent))
        except OSError as exc:
            raise ExportError(f"cannot create a staging folder in {self.target.parent}: {exc}") from exc
        return self

    @property
    def folder(self) -> Path:
        """The staging folder; valid inside the context, before `publish()`."""
        if self.path is None:
            raise RuntimeError("the staging folder exists only inside the context, before publish()")
        return self.path

    def publish(self) -> Path:
        """Atomically rename the staging folder to the version folder.

        A rename onto an existing non-empty folder fails (ENOTEMPTY/EEXIST) rather than
        replacing it, so a version published concurrently by another export wins and this
        one is refused; the pre-check refuses an existing empty folder too.
        """
        staged = self.folder
        ensure_absent(self.target)
        os.chmod(staged, 0o755)  # mkdtemp creates 0700; the server may run as another user
        try:
            os.rename(staged, self.target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise VersionExists(self.target) from exc
            raise ExportError(f"cannot publish {self.target}: {exc}") from exc
        self.path = None
        return self.target

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.path is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self.path = None
        if self._created_model_dir:
            with contextlib.suppress(OSError):  # not empty: another export published meanwhile
                self.target.parent.rmdir()


def publish_version(staging: VersionStaging, manifest: ModelManifest) -> Path:
    """Write `manifest` into the staged folder, check that it reads back as the server parses it
    and that the server's loader opens and warms up the version, then publish it; its final path."""
    manifest.write(staging.folder)
    ModelManifest.read(staging.folder)
    check_server_loads(staging.folder, manifest)
    return staging.publish()

"""How the contracts stamp when and with what something was made: UTC timestamps and library versions.

`model.json` lineage (`started_at`, `library_versions`), export facts (`exported_at`) and the
control state's history and audit (`at`) all carry these, written by the server, training and
both exporter pipelines; one definition keeps their format the same.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from typing import Literal


def utc_timestamp(timespec: Literal["seconds", "milliseconds"] = "seconds", at: float | None = None) -> str:
    """The current UTC time (or Unix time `at`), ISO 8601 with its `+00:00` offset."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec=timespec)


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed version of each distribution in `names` (left out when not installed), and python's."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions

"""Fixtures for the deployment checks: the chart, the validation tools, rendering helpers.

The tools come from `scripts/ci-tools.sh` (helm in `.tools/bin`, hadolint and
kubernetes-validate in the venv, promtool from Debian). A missing tool skips its tests
with the install command, except under `CI`, where it fails: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "hotserve"
GPU_VALUES = CHART / "values-gpu.yaml"
KUBE_VERSION = "1.30.0"
INSTALL_HINT = "run scripts/ci-tools.sh"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def missing_tool(name: str) -> None:
    """Skip (locally) or fail (under CI) because `name` is not installed."""
    message = f"{name} not found ({INSTALL_HINT})"
    if _in_ci():
        pytest.fail(f"{message}; CI must have every deployment validation tool", pytrace=False)
    pytest.skip(message)


def find_tool(name: str) -> str:
    """Path of a validation tool: the repo's .tools/bin, the venv's bin, then PATH."""
    for folder in (REPO / ".tools" / "bin", Path(sys.executable).parent):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        missing_tool(name)
    return str(found)


def run(
    cmd: Sequence[str], *, check: bool = True, cwd: Path = REPO, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool; with `check`, a non-zero exit fails the test showing its output."""
    result = subprocess.run(list(cmd), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}",
            pytrace=False,
        )
    return result


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return find_tool("hadolint")


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """`helm template` the chart; returns the rendered documents (None documents dropped)."""

    def _render(
        *values_files: Path, set_values: Sequence[str] = (), set_json: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        cmd = [helm, "template", "rel", str(CHART), "--namespace", "serving", "--kube-version", KUBE_VERSION]
        for values_file in values_files:
            cmd += ["-f", str(values_file)]
        for assignment in set_values:
            cmd += ["--set", assignment]
        for assignment in set_json:  # --set parses 20.5 as a string; JSON keeps numbers
            cmd += ["--set-json", assignment]
        out = run(cmd).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return _render


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]

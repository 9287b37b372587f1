"""The image's install steps (docker/install.sh) in a fresh venv give a server that becomes ready.

Runs the very script the Dockerfile runs, on a copy of the build context filtered by
.dockerignore, then starts `hotserve serve` the way the image does (env only) on a tiny
ONNX model (tests/fakes.py, as scripts/build-image-offline.sh uses), and probes it with the
image's HEALTHCHECK script.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from load_tests.server_process import ServerProcess, free_port, start_server
from tests.deploy.conftest import REPO
from tests.fakes import tiny_mlp_reference, write_model_version

pytestmark = pytest.mark.integration

READY_WAIT_S = 90.0


def _dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").rstrip("/")))
    return patterns


def _ignored(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negated, pattern in patterns:
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negated
    return ignored


def copy_build_context(dest: Path) -> list[str]:
    """Copy what `docker build .` would send; returns the copied relative paths."""
    patterns = _dockerignore_patterns()
    copied = []
    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO).as_posix()
        if path.is_file() and not _ignored(relative, patterns):
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(relative)
    return copied


def healthcheck(venv: Path, context: Path, port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, with the venv's interpreter as `python`."""
    return subprocess.run(
        [str(venv / "bin" / "python"), str(context / "docker" / "healthcheck.py")],
        env={"HOTSERVE_PORT": str(port), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv, build context) after running docker/install.sh exactly as the image build does."""
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    copied = copy_build_context(context)
    assert "pyproject.toml" in copied and "docker/install.sh" in copied
    assert not any(p.startswith((".venv/", ".git/", "tests/", "helm/")) for p in copied)
    venv = root / "venv"
    result = subprocess.run(
        ["sh", str(context / "docker" / "install.sh"), str(venv), str(context), "cpu"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    return venv, context


def test_install_has_the_server_without_torch_or_the_gpu_wheel(installed: tuple[Path, Path]) -> None:
    venv, _ = installed
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m, importlib.util as u, json; "
            "print(json.dumps({'torch': u.find_spec('torch') is not None, "
            "'dists': sorted(d.metadata['Name'].lower() for d in m.distributions())}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    facts = json.loads(probe.stdout)
    assert facts["torch"] is False
    assert "hotserve" in facts["dists"] and "onnxruntime" in facts["dists"]
    assert "onnxruntime-gpu" not in facts["dists"]
    assert (venv / "bin" / "hotserve").is_file()


@pytest.fixture
def server(
    installed: tuple[Path, Path], tmp_path: Path
) -> Iterator[tuple[ServerProcess, tuple[np.ndarray, np.ndarray]]]:
    """(the installed `hotserve serve`, (W, b) of the served `tiny` model)."""
    venv, _ = installed
    repository = tmp_path / "models"
    weight, bias = write_model_version(repository, "tiny", 1, features=4)
    # What the image sets, except the interface: tests bind loopback only. Started the way the
    # image starts it (env only), with the installed code, not this checkout's.
    with start_server(
        repository,
        tmp_path / "server.log",
        ready_path=None,
        grace_s=5,
        command=[str(venv / "bin" / "hotserve"), "serve"],
        from_checkout=False,
        cwd=tmp_path,
        env={
            "HOTSERVE_EXECUTION_PROVIDERS": "CPUExecutionProvider",
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        },
    ) as served:
        yield served, (weight, bias)


def test_installed_server_becomes_ready_serves_and_drains_on_sigterm(
    installed: tuple[Path, Path], server: tuple[ServerProcess, tuple[np.ndarray, np.ndarray]]
) -> None:
    venv, context = installed
    served, (weight, bias) = server
    deadline = time.monotonic() + READY_WAIT_S
    while (check := healthcheck(venv, context, served.port)).returncode != 0:
        assert served.process.poll() is None, f"server exited {served.process.returncode}:\n{served.log()}"
        assert time.monotonic() < deadline, f"not ready after {READY_WAIT_S}s: {check.stderr}\n{served.log()}"
        time.sleep(0.2)

    x = np.array([[1, 0, 0, 0], [0, 1, 1, 1]], dtype=np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    request = urllib.request.Request(
        f"{served.base_url}/v2/models/tiny/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    (output,) = answer["outputs"]
    assert output["name"] == "y" and output["shape"] == [2, 2]
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 2), tiny_mlp_reference(x, weight, bias), rtol=1e-5)

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0, served.log()
    after = healthcheck(venv, context, served.port)
    assert after.returncode == 1 and "not ready" in after.stderr


def test_healthcheck_fails_with_the_reason_when_nothing_listens(installed: tuple[Path, Path]) -> None:
    venv, context = installed
    port = free_port()
    result = healthcheck(venv, context, port)
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}/v2/health/ready" in result.stderr

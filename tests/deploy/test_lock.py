"""uv.lock and the files made from it agree with pyproject.toml and with each other.

scripts/setup-env.sh installs from uv.lock (run.sh, test.sh, CI), docker/install.sh from the
hashed exports in requirements/ (the image, CPU and GPU), the side environments from their own
hashed locks there; `bash scripts/lock.sh` remakes them all. A stale file fails here, not in a
user's install.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import REPO

REQUIREMENTS = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;\s*(.+?))?\s*\\?$")
REMAKE = "run `bash scripts/lock.sh`"


@pytest.fixture(scope="module")
def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv not found beside the interpreter or on PATH: run scripts/setup-env.sh", pytrace=False)
    return found


def _pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _lock() -> dict[str, Any]:
    with (REPO / "uv.lock").open("rb") as fh:
        return tomllib.load(fh)


def _pins(path: Path) -> dict[tuple[str, str], str]:
    """{(name, marker): version} of a hashed requirements file; every pin must carry a hash."""
    text = path.read_text()
    pins: dict[tuple[str, str], str] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.splitlines()[0]
        if not first or first.startswith("#"):
            continue
        match = PIN.match(first)
        assert match, f"{path.name}: not a pin: {first}"
        assert "--hash=sha256:" in block, f"{path.name}: {first} has no hash ({REMAKE})"
        name, version, marker = match.groups()
        pins[(name.lower().replace("_", "-"), marker or "")] = version
    return pins


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_lock_is_up_to_date_with_pyproject(uv: str) -> None:
    result = _run([uv, "lock", "--locked", "--offline"])
    assert result.returncode == 0, f"uv.lock is out of date with pyproject.toml: {REMAKE}\n{result.stderr}"


def test_the_image_installs_what_the_lock_pins(uv: str, tmp_path: Path) -> None:
    exported = tmp_path / "server-cpu.txt"
    result = _run([uv, "export", "-q", "--frozen", "--no-dev", "--no-emit-project", "--output-file", str(exported)])
    assert result.returncode == 0, result.stderr
    assert _pins(exported) == _pins(REQUIREMENTS / "server-cpu.txt"), f"requirements/server-cpu.txt is stale: {REMAKE}"


def test_the_gpu_image_pins_the_same_but_onnxruntime_gpu_for_onnxruntime() -> None:
    cpu = _pins(REQUIREMENTS / "server-cpu.txt")
    gpu = _pins(REQUIREMENTS / "server-gpu.txt")
    assert {k: v for k, v in cpu.items() if k[0] != "onnxruntime"} == {
        k: v for k, v in gpu.items() if k[0] != "onnxruntime-gpu"
    }, f"requirements/server-gpu.txt is stale: {REMAKE}"
    assert {name for name, _ in cpu} >= {"onnxruntime"} and "onnxruntime-gpu" not in {name for name, _ in cpu}
    assert {name for name, _ in gpu} >= {"onnxruntime-gpu"} and "onnxruntime" not in {name for name, _ in gpu}


def test_the_lock_holds_no_torch_to_install_and_no_cuda_wheels() -> None:
    packages = _lock()["package"]
    torch = [p for p in packages if p["name"] == "torch"]
    # The override leaves a record behind (resolved for `sys_platform == 'never'`), with nothing to install.
    assert all("wheels" not in p and "sdist" not in p for p in torch), torch
    assert not [p["name"] for p in packages if p["name"].startswith("nvidia-") or p["name"] == "triton"]


def test_the_torch_deps_group_is_what_the_pinned_torch_requires() -> None:
    (pin,) = [dep for dep in _pyproject()["project"]["optional-dependencies"]["train"] if dep.startswith("torch==")]
    try:
        installed = importlib.metadata.distribution("torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("torch is not installed: run scripts/setup-env.sh train", pytrace=False)
    assert installed.version.split("+")[0] == pin.removeprefix("torch=="), "run scripts/setup-env.sh train"
    required = sorted(req for req in installed.requires or [] if "extra ==" not in req)
    assert sorted(_pyproject()["dependency-groups"]["torch-deps"]) == [req.replace(" ", "") for req in required]


@pytest.mark.parametrize("side", ["feast", "mlflow-server"])
def test_each_side_environment_lock_pins_its_input(side: str) -> None:
    wanted = [
        line.split(";")[0].strip()
        for line in (REQUIREMENTS / f"{side}.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pins = {name: version for (name, _), version in _pins(REQUIREMENTS / f"{side}.txt").items()}
    for requirement in wanted:
        name, version = re.sub(r"\[.*\]", "", requirement).split("==")
        assert pins.get(name) == version, f"requirements/{side}.txt does not pin {requirement}: {REMAKE}"


def test_the_tracking_server_is_the_release_of_the_mlflow_client() -> None:
    (client,) = [d for d in _pyproject()["project"]["optional-dependencies"]["mlflow"] if d.startswith("mlflow-skinny")]
    server = (REQUIREMENTS / "mlflow-server.in").read_text()
    assert f"mlflow=={client.split('==')[1]}" in server.split()

"""The GPU check (`scripts/gpu-check.sh`, `load_tests/gpu_check.py`): without a GPU it says so and
exits 0 with a report that says why; with `--cpu` the same steps (a real server driven by wrk,
a rows-per-request sweep, two epochs of training) run on the CPU and fill every part of the
report, so its format is checked here and the GPU run only swaps the device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from load_tests.gpu_check import REPORT_FORMAT
from load_tests.server_process import REPO_ROOT
from onnx_models import tabular_model, write_version

pytestmark = pytest.mark.integration

VENV = Path(sys.executable).parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_") and k != "PYTHONPATH"}
    return {**env, "HOTSERVE_VENV": str(VENV), "PYTHONPATH": str(REPO_ROOT)}


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_the_script_says_so_and_exits_0(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        ["bash", "scripts/gpu-check.sh", str(report_path)],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no NVIDIA GPU" in done.stdout
    report = json.loads(report_path.read_text())
    assert report["format"] == REPORT_FORMAT
    assert report["device"]["gpus"] == []
    assert report["skipped"].startswith("no NVIDIA GPU")
    assert report["serving"] == [] and report["sweep"] == [] and report["training"] is None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by scripts/ci-tools.sh")
def test_cpu_run_fills_every_part_of_the_report(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(
        repository, "fraud", 1, tabular_model(seed=1), [("features", "FP32", [-1, 4])], [("score", "FP32", [-1, 1])]
    )
    report_path = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "load_tests.gpu_check",
        "--cpu",
        "--out",
        str(report_path),
        "--duration",
        "1",
        "--models",
        "fraud",
        "--clients",
        "1,4",
        "--sweep",
        "8",
        "--train-rows",
        "2000",
        "--repository",
        str(repository),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    assert report["format"] == REPORT_FORMAT and report["skipped"] is None
    assert report["provider"] == "CPUExecutionProvider"
    assert report["providers_in_use"] == {"fraud": "CPUExecutionProvider"}
    assert [(c["clients"], c["rows_per_request"]) for c in report["serving"]] == [(1, 1), (4, 1)]
    assert [(c["clients"], c["rows_per_request"]) for c in report["sweep"]] == [(4, 8)]
    for cell in report["serving"] + report["sweep"]:
        assert cell["errors"] == 0
        assert cell["requests_per_s"] > 0 and 0 < cell["p50_ms"] <= cell["p99_ms"]
        assert cell["rows_per_s"] == pytest.approx(cell["requests_per_s"] * cell["rows_per_request"])
    training = report["training"]
    assert training["device"] == "cpu" and training["recorded_device"] == "cpu" and training["epochs"] == 2
    assert training["recorded_amp"] is None and training["seconds"] > 0
    assert {"auc", "log_loss"} <= set(training["metrics"])

"""The GPU check: one short run that measures hotserve's CUDA path and writes one JSON report.

On a machine with an NVIDIA GPU (and onnxruntime-gpu, torch with CUDA): the demo MLP and the
encoder served by a real `hotserve serve` on the CUDA execution provider (IO binding: inputs
copied to the device once per batch, through the real batcher), throughput and p50/p99 at 1 and
64 clients, a sweep of rows per request (the batch sizes the GPU sees), and two epochs of
training with `--device cuda --amp`. On a machine without one it says so, writes a report that
says why, and exits 0: CI and laptops run it harmlessly.

    python -m load_tests.gpu_check --out gpu-report.json            # scripts/gpu-check.sh
    python -m load_tests.gpu_check --cpu --duration 1 --out r.json  # the same steps on CPU (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from load_tests.benchmark import (
    BIN,
    MODELS,
    bodies,
    latest_version_dir,
    prepare_repository,
    run_wrk,
    wrk_errors,
    wrk_rate,
)
from load_tests.server_process import start_server
from server.contract.manifest import ModelManifest

REPORT_FORMAT = 1
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True, slots=True)
class Device:
    """What the machine offers: GPUs as `nvidia-smi -L` names them, onnxruntime's providers, torch."""

    gpus: list[str]
    onnxruntime_providers: list[str]
    torch_cuda: bool | None
    """None: torch is not installed."""

    @property
    def missing(self) -> str | None:
        """Why the CUDA path cannot be measured here; None when it can."""
        if not self.gpus:
            return "no NVIDIA GPU (nvidia-smi is missing or lists none)"
        if CUDA not in self.onnxruntime_providers:
            return f"onnxruntime offers {self.onnxruntime_providers}, not {CUDA} (install onnxruntime-gpu)"
        return None


@dataclass(frozen=True, slots=True)
class Serving:
    model: str
    protocol: str
    clients: int
    rows_per_request: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True, slots=True)
class Training:
    device: str
    amp: bool
    epochs: int
    rows: int
    seconds: float
    metrics: dict[str, float]
    recorded_device: str
    """The device the checkpoint's metadata records (what training really used)."""
    recorded_amp: str | None
    """The mixed precision it records (bf16, fp16; None: float32)."""


@dataclass
class Report:
    format: int
    started: str
    finished: str
    host: str
    cpus: int | None
    python: str
    device: Device
    provider: str
    """The execution provider asked for."""
    skipped: str | None = None
    """Why nothing was measured (no GPU); None when the run measured."""
    providers_in_use: dict[str, str] = field(default_factory=dict)
    """Model -> the provider the server reports at /v2/models/{name}."""
    serving: list[Serving] = field(default_factory=list)
    sweep: list[Serving] = field(default_factory=list)
    training: Training | None = None


def detect_device() -> Device:
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        if listed.returncode == 0:
            gpus = [line.strip() for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    import onnxruntime as ort

    torch_cuda: bool | None
    try:
        import torch

        torch_cuda = bool(torch.cuda.is_available())
    except ImportError:
        torch_cuda = None
    return Device(gpus, list(ort.get_available_providers()), torch_cuda)


def provider_of(base_url: str, model: str) -> str:
    with urllib.request.urlopen(f"{base_url}/v2/models/{model}", timeout=10) as response:
        metadata: dict[str, Any] = json.loads(response.read())
    return str(metadata.get("execution_provider"))


def measure_serving(
    repository: Path,
    models: list[str],
    provider: str,
    clients: list[int],
    sweep_rows: list[int],
    duration_s: int,
    workdir: Path,
    report: Report,
) -> None:
    """Serve `repository` on `provider` and drive it with wrk: each model at each client count
    (one row per request, binary protocol), then rows per request swept at the top client count."""
    env = {"HOTSERVE_EXECUTION_PROVIDERS": f"{provider},CPUExecutionProvider", "HOTSERVE_LOG_LEVEL": "warning"}
    with start_server(repository, workdir / "server.log", env=env, startup_timeout_s=180) as server:
        for model in models:
            manifest = ModelManifest.read(latest_version_dir(repository, model))
            report.providers_in_use[model] = provider_of(server.base_url, model)
            url = f"{server.base_url}/v2/models/{model}/infer"
            for rows in sorted({1, *sweep_rows}):
                body, content_type, header_length = bodies(manifest, rows)["binary"]
                run_wrk(url, body, content_type, header_length, 4, 1, workdir)  # warm-up
                cells = clients if rows == 1 else [max(clients)]
                for count in cells:
                    w = run_wrk(url, body, content_type, header_length, count, duration_s, workdir)
                    rps = wrk_rate(w)
                    errors = wrk_errors(w)
                    cell = Serving(
                        model, "binary", count, rows, rps, rps * rows, w["p50_us"] / 1000, w["p99_us"] / 1000, errors
                    )
                    (report.serving if rows == 1 else report.sweep).append(cell)
                    print(
                        f"   {model:8s} rows {rows:<4d} c={count:<3d} {rps:8.0f} req/s {rps * rows:9.0f} rows/s "
                        f"p50 {cell.p50_ms:6.2f} ms p99 {cell.p99_ms:6.2f} ms errors {errors}",
                        flush=True,
                    )


def measure_training(device: str, amp: bool, epochs: int, rows: int, workdir: Path) -> Training:
    """`hotserve train` of the demo MLP on `device`; the figures from its checkpoint's metadata."""
    checkpoints = workdir / "checkpoints"
    command = [
        str(BIN / "hotserve"),
        "train",
        "--name",
        "gpucheck",
        "--dataset",
        "demo:fraud",
        "--rows",
        str(rows),
        "--epochs",
        str(epochs),
        "--device",
        device,
        "--checkpoints",
        str(checkpoints),
        "--quiet",
        *(["--amp"] if amp else []),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    metadata = json.loads(next((checkpoints / "gpucheck").glob("*/metadata.json")).read_text())
    return Training(
        device, amp, epochs, rows, seconds, dict(metadata["metrics"]), str(metadata["device"]), metadata.get("amp")
    )


def write(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-report.json"))
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="run every step on the CPU instead (checks the script itself, measures no GPU)",
    )
    parser.add_argument("--models", default="fraud,encoder")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--sweep", default="8,32,128", help="rows per request swept at the top client count")
    parser.add_argument("--duration", type=int, default=8, help="seconds per cell")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="model repository (the demo models are trained and exported into it when missing)",
    )
    args = parser.parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    device = detect_device()
    provider = "CPUExecutionProvider" if args.cpu else CUDA
    report = Report(
        REPORT_FORMAT, started, started, platform.node(), os.cpu_count(), platform.python_version(), device, provider
    )
    missing = None if args.cpu else device.missing
    if missing is not None:
        report.skipped = missing
        write(report, args.out)
        print(f"gpu-check: {missing}; nothing measured (report: {args.out})")
        return 0
    if shutil.which("wrk") is None:
        print("gpu-check: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: {unknown} are not demo models ({', '.join(MODELS)})")
    with tempfile.TemporaryDirectory(prefix="hotserve-gpu-check-") as tmp:
        workdir = Path(tmp)
        repository = args.repository or workdir / "repository"
        prepare_repository(repository, models, workdir / "checkpoints")  # gone with the temporary folder
        measure_serving(
            repository,
            models,
            provider,
            [int(c) for c in args.clients.split(",")],
            [int(r) for r in args.sweep.split(",") if r],
            args.duration,
            workdir,
            report,
        )
        report.training = measure_training("cpu" if args.cpu else "cuda", not args.cpu, 2, args.train_rows, workdir)
    report.finished = datetime.now(UTC).isoformat(timespec="seconds")
    write(report, args.out)
    print(f"gpu-check: report written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

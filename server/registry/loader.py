"""Turns a version folder into a `ServedVersion`: read, verify, open, check, warm up (control path).

Each step that can fail raises `ModelLoadFailed` with the precise reason (which file, what
was expected, what was found), so `registry.statuses()` can show why a version is FAILED.
File reads, hashing and session creation run in a worker thread; warm-up runs through the
version's own executor; the event loop never blocks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from server.contract.manifest import (
    MANIFEST_FILENAME,
    NUMPY_DTYPES,
    ONNX_FILENAME,
    ModelManifest,
    TensorSpec,
    sha256_file,
)
from server.errors import HotserveError, ModelLoadFailed
from server.metrics.instruments import Metrics
from server.registry.repository import inside
from server.registry.served import ServedVersion
from server.runtime.base import Runtime
from server.runtime.onnx import OnnxRuntime
from server.settings import Settings


def read_manifest(folder: Path, name: str, version: int) -> ModelManifest:
    """Parse and validate `model.json`; it must describe the folder it sits in."""
    path = folder / MANIFEST_FILENAME
    try:
        manifest = ModelManifest.read(folder)
    except FileNotFoundError:
        raise ModelLoadFailed(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLoadFailed(f"{path} cannot be read: {error}") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in error.errors()
        )
        raise ModelLoadFailed(f"{path} is invalid: {problems}") from error
    if (manifest.name, manifest.version) != (name, version):
        raise ModelLoadFailed(
            f"{path} describes {manifest.name!r} version {manifest.version}, "
            f"but sits in the folder of {name!r} version {version}"
        )
    return manifest


def verify_model_file(folder: Path, manifest: ModelManifest) -> Path:
    """The ONNX file's sha256 must equal `onnx_sha256` in the manifest."""
    path = folder / ONNX_FILENAME
    _check_sha256(path, manifest.onnx_sha256, "", "file")
    return path


def verify_op_libraries(folder: Path, manifest: ModelManifest) -> list[Path]:
    """Each custom-op library the manifest lists must be in the folder with its sha256, and be no
    symlink out of the model repository (it is loaded into the process: code, not data)."""
    paths = []
    real_root = folder.parent.parent.resolve()
    for library in manifest.op_libraries:
        path = folder / library.file
        if not inside(path, real_root):
            raise ModelLoadFailed(f"{path} (custom-op library) is a symlink out of the model repository")
        _check_sha256(path, library.sha256, f" (custom-op library for {library.domains})", "library")
        paths.append(path)
    return paths


def _check_sha256(path: Path, expected: str, role: str, noun: str) -> None:
    """`path` exists, is readable and hashes to `expected`; `role` and `noun` name it in errors."""
    try:
        digest = sha256_file(path)
    except FileNotFoundError:
        raise ModelLoadFailed(f"{path}{role} is missing") from None
    except OSError as error:
        raise ModelLoadFailed(f"{path} cannot be read: {error}") from error
    if digest != expected:
        raise ModelLoadFailed(
            f"{path} has sha256 {digest}, {MANIFEST_FILENAME} expects {expected}: the {noun} is corrupt or was replaced"
        )


def check_graph(manifest: ModelManifest, runtime: Runtime) -> None:
    """The graph's real inputs/outputs must be the ones the manifest promises the edge."""
    batching = manifest.batching
    _check_tensors("input", manifest.inputs, runtime.inputs, batching.max_batch_size, batching.batch_axis)
    _check_tensors("output", manifest.outputs, runtime.outputs, batching.max_batch_size, batching.batch_axis)


def _check_tensors(
    kind: str, declared: list[TensorSpec], actual: list[TensorSpec], max_batch_size: int, batch_axis: bool
) -> None:
    graph = {spec.name: spec for spec in actual}
    missing = [spec.name for spec in declared if spec.name not in graph]
    extra = sorted(set(graph) - {spec.name for spec in declared})
    if missing or extra:
        raise ModelLoadFailed(
            f"{kind}s of {MANIFEST_FILENAME} do not match the graph: "
            f"declared but absent {missing}, in the graph but undeclared {extra}"
        )
    for spec in declared:
        real = graph[spec.name]
        where = f"{kind} {spec.name!r}"
        if spec.datatype != real.datatype:
            raise ModelLoadFailed(f"{where}: {MANIFEST_FILENAME} says {spec.datatype}, the graph has {real.datatype}")
        if batch_axis and spec.shape[:1] != [-1]:
            raise ModelLoadFailed(
                f"{where}: {MANIFEST_FILENAME} shape {spec.shape} must start with -1 (the batch axis)"
            )
        if not real.shape:
            continue  # graph leaves the rank unknown; run-time checks cover it
        if len(real.shape) != len(spec.shape):
            raise ModelLoadFailed(
                f"{where}: {MANIFEST_FILENAME} shape {spec.shape}, graph shape {real.shape} (different rank)"
            )
        if batch_axis and real.shape[0] != -1 and not (real.shape[0] == 1 and max_batch_size == 1):
            raise ModelLoadFailed(
                f"{where}: the graph fixes the batch axis at {real.shape[0]}; "
                f"batching up to {max_batch_size} rows needs a dynamic first axis"
            )
        first = 1 if batch_axis else 0  # without a batch axis every axis is checked
        for axis, (want, have) in enumerate(zip(spec.shape[first:], real.shape[first:], strict=True), first):
            if have != -1 and want != have:
                raise ModelLoadFailed(f"{where}: axis {axis} is {have} in the graph, {MANIFEST_FILENAME} says {want}")


def warm_up_rows(manifest: ModelManifest) -> list[int]:
    """The batch sizes a version is warmed up at before it serves: 1 and its largest batch."""
    return sorted({1, manifest.batching.max_batch_size})


def warm_up_inputs(manifest: ModelManifest, rows: int) -> dict[str, np.ndarray]:
    """Zeros (empty strings for BYTES) of every input at `rows` rows; other dynamic axes get 1.

    Without a batch axis the declared shape is the whole tensor and `rows` is ignored.
    """
    inputs: dict[str, np.ndarray] = {}
    batch_axis = manifest.batching.batch_axis
    for spec in manifest.inputs:
        dims = spec.shape[1:] if batch_axis else spec.shape
        shape = ([rows] if batch_axis else []) + [dim if dim > 0 else 1 for dim in dims]
        dtype = NUMPY_DTYPES[spec.datatype]
        inputs[spec.name] = np.full(shape, b"", dtype=object) if dtype.kind == "O" else np.zeros(shape, dtype=dtype)
    return inputs


def check_inside_repository(folder: Path) -> None:
    """The version's files must not be symlinks out of the model repository (`<repo>/<model>/<v>`)."""
    real_root = folder.parent.parent.resolve()
    for filename in (MANIFEST_FILENAME, ONNX_FILENAME):
        if not inside(folder / filename, real_root):
            raise ModelLoadFailed(f"{folder / filename} is a symlink out of the model repository")


def open_version(folder: Path, name: str, version: int, settings: Settings) -> tuple[ModelManifest, Runtime]:
    """Blocking part of a load: manifest, sha256, session, graph check. Call off the loop."""
    check_inside_repository(folder)
    manifest = read_manifest(folder, name, version)
    model_path = verify_model_file(folder, manifest)
    runtime = OnnxRuntime(
        model_path,
        settings.provider_preference,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        spinning=settings.intra_op_spinning,
        op_libraries=verify_op_libraries(folder, manifest),
        batch_axis=manifest.batching.batch_axis,
    )
    try:
        check_graph(manifest, runtime)
    except BaseException:
        runtime.close()
        raise
    return manifest, runtime


async def load_version(folder: Path, name: str, version: int, settings: Settings, metrics: Metrics) -> ServedVersion:
    """Load one version fully; it is returned only once warm-up at 1 and max_batch_size rows passed."""
    manifest, runtime = await asyncio.to_thread(open_version, folder, name, version, settings)
    served = ServedVersion(manifest, runtime, metrics, inline_max_s=settings.inline_run_max_us / 1e6)
    try:
        for rows in warm_up_rows(manifest):
            try:
                await served.executor.run(warm_up_inputs(manifest, rows))
            except HotserveError as error:
                raise ModelLoadFailed(f"warm-up with {rows} rows failed: {error.message}") from error
            except Exception as error:
                raise ModelLoadFailed(f"warm-up with {rows} rows failed: {type(error).__name__}: {error}") from error
    except BaseException:
        await served.close(timeout_s=0)
        raise
    return served

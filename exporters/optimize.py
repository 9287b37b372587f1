"""Offline graph optimisation with onnxruntime, applied once at export instead of at every load.

Level: BASIC. onnxruntime runs basic rewrites (constant folding, redundant node elimination,
Conv/Add/Mul fusions) before partitioning the graph across providers, so they hold for every
execution provider and the saved graph stays standard ONNX the server can run on CPU, CUDA
or TensorRT alike. EXTENDED rewrites run after partitioning, only on nodes assigned to the
provider used here (CPU), and fuse into `com.microsoft` contrib ops; saved offline they
would tie the model to that provider. The server's session still applies the higher levels
online, for the provider it actually chose.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from exporters.errors import ExportError

OPTIMIZATION_LEVEL = "basic"
"""Recorded so a reader of the export knows which rewrites the stored graph already has."""


def optimize_graph(source: Path, target: Path) -> None:
    """Write `source` with onnxruntime's basic, provider-portable optimisations to `target`."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind types (Fail, InvalidGraph, ...)
        raise ExportError(f"onnxruntime could not optimise {source.name}: {exc}") from exc
    if not target.is_file():
        raise ExportError(f"onnxruntime wrote no optimised model to {target}")

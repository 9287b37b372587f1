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

import onnx
import onnxruntime as ort

from exporters.errors import ExportError
from exporters.shared.signature import graph_nodes


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
    prune_opset_imports(target)


def prune_opset_imports(path: Path) -> None:
    """Keep only the opset imports the graph's nodes use.

    onnxruntime (here, and in quantisation pre-processing) saves every domain it knows (`com.microsoft.nchwc`, `org.pytorch.aten`, ...)
    into `opset_import`, though a basic-level graph uses none; other runtimes and tools
    need not know those domains, so declaring them would make the model look less portable.
    """
    model = onnx.load(str(path))
    used = _node_domains(model.graph) | {""}
    for function in model.functions:
        used |= {function.domain} | {node.domain or "" for node in function.node}
    kept = [entry for entry in model.opset_import if (entry.domain or "") in used]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save(model, str(path))


def _node_domains(graph: onnx.GraphProto) -> set[str]:
    """Domains of every node in `graph` and its subgraphs (If/Loop/Scan bodies)."""
    return {node.domain or "" for node in graph_nodes(graph)}

"""Reduced-precision variants of an exported fp32 graph: dynamic int8 (CPU) and fp16 (GPU).

Both keep FP32 inputs and outputs, so clients and `model.json` signatures are unchanged;
`export.pipeline` (both) and `imports.source_parity` (int8) judge them by parity and by the
metric change they cause.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

from exporters.errors import ExportError
from exporters.shared.optimize import prune_opset_imports
from exporters.shared.signature import graph_nodes


def quantize_int8(source: Path, target: Path, workdir: Path) -> None:
    """Dynamic int8 quantisation: int8 weights, activations quantised per batch at run time.

    Runs onnxruntime's recommended pre-processing first (symbolic shape inference and
    basic optimisation): it also replaces the exporter's `value_info` entries for weights,
    which otherwise contradict the quantiser's transposed Gemm weights and fail its shape
    inference. Symbolic shape inference knows no ONNX-ML operators (imported scikit-learn
    models): such graphs are pre-processed with ONNX's own shape inference (trying would fail
    and leave `sym_shape_infer_temp.onnx` in the working directory).
    """
    prepared = workdir / f"{source.stem}.quant-prep.onnx"
    onnx_ml = any(node.domain == "ai.onnx.ml" for node in graph_nodes(onnx.load(str(source)).graph))
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=onnx_ml)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
        prune_opset_imports(target)
    except Exception as exc:  # quantiser failures surface as assorted onnx/ort/python errors
        raise ExportError(f"int8 quantisation of {source.name} failed: {exc}") from exc
    finally:
        prepared.unlink(missing_ok=True)


def convert_fp16(source: Path, target: Path) -> None:
    """Store weights and compute in float16, with FP32 inputs/outputs (`keep_io_types`).

    Intermediate `value_info` is dropped first: the converter re-infers every type, and
    stale float32 entries (e.g. for a Cast's output) would contradict what it converted.
    It appends the boundary Casts at the end of the node list, so the graph is re-sorted
    topologically, as the ONNX checker (and other runtimes) require.
    """
    try:
        model = onnx.load(str(source))
        del model.graph.value_info[:]
        model = convert_float_to_float16(model, keep_io_types=True)
        OnnxModel.graph_topological_sort(model.graph, is_deterministic=True)
        onnx.save(model, str(target))
    except Exception as exc:  # converter failures surface as assorted onnx/python errors
        raise ExportError(f"fp16 conversion of {source.name} failed: {exc}") from exc

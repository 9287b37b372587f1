"""Multiclass graphs answer with class names: the class index the model computes becomes the `label` it serves.

PyTorch cannot emit strings, so the trained module returns the index of the likeliest class
and this step, run on the fp32 graph before any check, appends an `ai.onnx.ml` LabelEncoder
that maps it to the class as it was in the training data (BYTES for text, INT64 for whole
numbers). Every later graph (optimised, int8, fp16) inherits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from exporters.errors import ExportError

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3
"""LabelEncoder with `keys_int64s`/`values_strings`/`values_int64s` (opsets 2-3); onnxruntime supports it."""
INDEX_SUFFIX = "_index"


def attach_class_names(path: Path, output: str, classes: Sequence[int] | Sequence[str]) -> None:
    """Rewrite `path` so output `output` (class indices) carries `classes[index]` instead."""
    model = onnx.load(str(path))
    graph = model.graph
    outputs = [value for value in graph.output if value.name == output]
    if len(outputs) != 1:
        raise ExportError(f"{path.name} has no single output {output!r} to attach class names to")
    (declared,) = outputs
    index_name = output + INDEX_SUFFIX
    for node in graph.node:
        node.output[:] = [index_name if name == output else name for name in node.output]
        node.input[:] = [index_name if name == output else name for name in node.input]
    text = not all(isinstance(c, int) for c in classes)
    values = {"values_strings": [str(c) for c in classes]} if text else {"values_int64s": [int(c) for c in classes]}
    default = {"default_string": ""} if text else {"default_int64": -1}
    graph.node.append(
        helper.make_node(
            "LabelEncoder",
            [index_name],
            [output],
            name=f"{output}_names",
            domain=ML_DOMAIN,
            keys_int64s=list(range(len(classes))),
            **values,
            **default,
        )
    )
    dims = [d.dim_param or d.dim_value for d in declared.type.tensor_type.shape.dim]
    declared.CopyFrom(helper.make_tensor_value_info(output, TensorProto.STRING if text else TensorProto.INT64, dims))
    if not any(entry.domain == ML_DOMAIN for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    onnx.save(model, str(path))

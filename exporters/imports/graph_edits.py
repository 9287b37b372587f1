"""The few edits `hotserve import` makes to a foreign graph, each asked for or proven harmless.

Every edit returns a sentence for the version's lineage (`ImportedFrom.edits`), and every
edited graph is checked against the original file by `shared.parity` before it is published.

- `strip_zipmap` (asked for with `--strip-zipmap`): a classifier's ZipMap turns its
  probability tensor into a sequence of {class: probability} maps, which the v2 protocol cannot
  carry; the node becomes an Identity, so the output keeps its name and is that tensor.
- `declare_batch_dims` (proven by running the graph): some converters declare a fixed first
  dimension for an output that in fact has one row per input row (onnxmltools' LightGBM `label`
  is declared `[1]`); onnxruntime then warns on every run and the server's loader would refuse
  the graph, so the dimension is declared symbolic, as it behaves.
"""

from __future__ import annotations

import onnx

from exporters.shared.signature import producers

BATCH_DIM = "batch"
"""Symbolic name given to a first axis the importer declares dynamic."""


def zipmap_classes(node: onnx.NodeProto) -> list[int] | list[str]:
    """The class labels of a ZipMap node, in the order of its input tensor's columns."""
    for attribute in node.attribute:
        if attribute.name == "classlabels_int64s":
            return [int(v) for v in attribute.ints]
        if attribute.name == "classlabels_strings":
            return [v.decode() for v in attribute.strings]
    return []


def zipmap_outputs(model: onnx.ModelProto) -> dict[str, list[int] | list[str]]:
    """Graph outputs made by a ZipMap node -> its class labels (the map keys, in column order)."""
    made_by = producers(model.graph)
    return {
        value.name: zipmap_classes(made_by[value.name])
        for value in model.graph.output
        if value.name in made_by and made_by[value.name].op_type == "ZipMap"
    }


def strip_zipmap(model: onnx.ModelProto) -> list[str]:
    """Replace each output ZipMap by an Identity of its FP32 probability tensor; edits made."""
    made_by = producers(model.graph)
    inferred = {value.name: value.type for value in onnx.shape_inference.infer_shapes(model).graph.value_info}
    edits = []
    for value in model.graph.output:
        node = made_by.get(value.name)
        if node is None or node.op_type != "ZipMap":
            continue
        classes = zipmap_classes(node)
        node.op_type = "Identity"
        node.domain = ""
        del node.attribute[:]
        probabilities = inferred.get(node.input[0])
        if probabilities is not None and probabilities.tensor_type.HasField("shape"):
            value.type.CopyFrom(probabilities)
        else:
            value.type.CopyFrom(
                onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [BATCH_DIM, len(classes) or None])
            )
        edits.append(
            f"removed the ZipMap of output {value.name!r}: it is the FP32 probability "
            f"tensor, one column per class in the order {classes}"
        )
    if edits and not any(entry.domain in ("", "ai.onnx") for entry in model.opset_import):
        # A pure ONNX-ML graph imports no default domain, where Identity lives: take the newest
        # opset its IR version allows.
        model.opset_import.append(onnx.helper.make_opsetid("", _newest_opset(model.ir_version)))
    return edits


def _newest_opset(ir_version: int) -> int:
    """The newest default-domain opset a model of `ir_version` may import."""
    return max(row[2] for row in onnx.helper.VERSION_TABLE if row[1] <= ir_version)


def declare_batch_dims(model: onnx.ModelProto, names: list[str]) -> list[str]:
    """Declare the first axis of the named outputs symbolic; edits made."""
    edits = []
    for value in model.graph.output:
        if value.name not in names:
            continue
        first = value.type.tensor_type.shape.dim[0]
        declared = first.dim_value
        first.Clear()
        first.dim_param = BATCH_DIM
        edits.append(
            f"output {value.name!r} was declared with a fixed first axis of {declared} "
            f"but has one row per input row: declared it dynamic"
        )
    return edits

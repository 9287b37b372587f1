"""What a foreign ONNX graph offers the server: its tensors in v2 terms, and what cannot be served.

First step of `imports.pipeline.import_model` after onnx's checker: reads the declared inputs and
outputs of a graph made elsewhere (skl2onnx, onnxmltools, another exporter) and refuses, with
the fix in the message, what the server cannot carry: non-tensor values (skl2onnx's ZipMap
sequence-of-maps), element types the v2 protocol has no name for, operator domains
onnxruntime does not implement, and a missing batch axis unless serving without one was asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from exporters.errors import ModelRefused
from server.contract.manifest import Datatype, TensorSpec

ONNX_DATATYPES: dict[int, Datatype] = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
}
"""ONNX tensor element type -> v2 datatype; other element types cannot cross the wire."""

RUNTIME_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
"""Operator domains every onnxruntime build implements (standard ONNX, ONNX-ML, contrib ops)."""

ZIPMAP_FIX = (
    "convert the classifier with skl2onnx's options={'zipmap': False} (onnxmltools: "
    "zipmap=False) to get a probabilities tensor, or import with --strip-zipmap"
)

Dim = int | str | None
"""A declared dimension: fixed size, symbolic name, or unknown."""


@dataclass(frozen=True)
class GraphTensor:
    """One declared graph input or output that is a tensor."""

    name: str
    datatype: Datatype
    dims: list[Dim] | None
    """None when the graph declares no shape at all (unknown rank)."""

    def spec(self, batch_axis: bool) -> TensorSpec:
        """The manifest's view: fixed sizes kept, everything else -1 (the batch axis always)."""
        dims = self.dims or []
        shape = [d if isinstance(d, int) else -1 for d in dims]
        if batch_axis and shape:
            shape[0] = -1
        return TensorSpec(name=self.name, datatype=self.datatype, shape=shape)


def graph_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph` and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
                yield from graph_nodes(subgraph)


def describe_type(value_type: onnx.TypeProto) -> str:
    """ONNX's own notation for a value type: tensor(float), seq(map(int64,tensor(float))), ..."""
    kind = value_type.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_element_name(value_type.tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({describe_type(value_type.sequence_type.elem_type)})"
    if kind == "map_type":
        key = _element_name(value_type.map_type.key_type)
        return f"map({key},{describe_type(value_type.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({describe_type(value_type.optional_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({_element_name(value_type.sparse_tensor_type.elem_type)})"
    return "a value of unknown type"


def _element_name(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_string(elem_type).removeprefix("TensorProto.").lower()


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Value name -> the top-level node that computes it."""
    return {name: node for node in graph.node for name in node.output}


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Inputs a caller feeds: before IR version 4 initializers were listed as inputs too."""
    initialized = {tensor.name for tensor in graph.initializer}
    return [value for value in graph.input if value.name not in initialized]


def tensors(path: Path, graph: onnx.GraphProto) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """The graph's declared inputs and outputs; ModelRefused for any that is not a v2 tensor."""
    made_by = producers(graph)
    inputs = [_tensor(path, "input", value, None) for value in graph_inputs(graph)]
    outputs = [_tensor(path, "output", value, made_by.get(value.name)) for value in graph.output]
    return inputs, outputs


def _tensor(path: Path, kind: str, value: onnx.ValueInfoProto, producer: onnx.NodeProto | None) -> GraphTensor:
    value_type = value.type
    if value_type.WhichOneof("value") != "tensor_type":
        described = describe_type(value_type)
        if producer is not None and producer.op_type == "ZipMap":
            raise ModelRefused(
                path,
                f"output {value.name!r} is {described}, a sequence of maps made "
                f"by a ZipMap operator, which the v2 protocol cannot carry: "
                f"{ZIPMAP_FIX}",
            )
        raise ModelRefused(
            path,
            f"{kind} {value.name!r} is {described}, not a tensor; the v2 protocol "
            f"carries tensors only: re-export the model with tensor {kind}s",
        )
    tensor_type = value_type.tensor_type
    datatype = ONNX_DATATYPES.get(tensor_type.elem_type)
    if datatype is None:
        raise ModelRefused(
            path,
            f"{kind} {value.name!r} has element type "
            f"{_element_name(tensor_type.elem_type)}, which has no v2 datatype "
            f"(supported: {sorted(set(ONNX_DATATYPES.values()))})",
        )
    dims: list[Dim] | None = None
    if tensor_type.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
    return GraphTensor(value.name, datatype, dims)


def check_batch_axis(path: Path, inputs: list[GraphTensor]) -> None:
    """Every input's first axis must be dynamic: the server stacks requests along it."""
    advice = (
        "re-export it with a dynamic first axis, or import with --no-batch to serve it with "
        "batching off (each request is one run of the graph, with exactly its shapes)"
    )
    for tensor in inputs:
        if tensor.dims is None:
            raise ModelRefused(
                path, f"input {tensor.name!r} declares no shape, so it has no known batch axis: {advice}"
            )
        if not tensor.dims:
            raise ModelRefused(path, f"input {tensor.name!r} is a scalar: the graph has no batch axis; {advice}")
        if isinstance(tensor.dims[0], int):
            raise ModelRefused(
                path,
                f"input {tensor.name!r} has shape {_shown(tensor.dims)} with a "
                f"fixed first axis of {tensor.dims[0]}: the graph has no batch "
                f"axis; {advice}",
            )


def check_no_batch_shapes(path: Path, inputs: list[GraphTensor]) -> None:
    """Without a batch axis the manifest holds whole shapes: the graph must declare its inputs'."""
    for tensor in inputs:
        if tensor.dims is None:
            raise ModelRefused(
                path, f"input {tensor.name!r} declares no shape; serving without a batch axis needs every input's rank"
            )


def _shown(dims: list[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def custom_domains(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Operator domains onnxruntime does not implement -> the operators used from each.

    Domains of the model's own local functions are not custom: the file defines them.
    """
    local = {function.domain for function in model.functions}
    found: dict[str, set[str]] = {}
    for node in [*graph_nodes(model.graph), *(n for f in model.functions for n in f.node)]:
        domain = node.domain or ""
        if domain not in RUNTIME_DOMAINS and domain not in local:
            found.setdefault(domain, set()).add(node.op_type)
    return {domain: sorted(ops) for domain, ops in sorted(found.items())}


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default ONNX domain (0 when it imports none)."""
    return max((int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    """Opset per imported domain ("" is the default ONNX domain)."""
    return {entry.domain or "": int(entry.version) for entry in model.opset_import}

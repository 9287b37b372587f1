"""PyTorch module -> ONNX graph with a dynamic batch axis; the full checker and signature check.

First step of `pipeline.export_checkpoint` (this folder). Uses torch's `torch.export`-based exporter
(`dynamo=True`): it is the default and maintained path in torch 2.13, while the TorchScript
exporter (`dynamo=False`) is deprecated and, being a tracer, silently bakes Python branches
taken on the example batch (e.g. attention fast-path checks) into the graph.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from exporters.errors import ExportError, SignatureMismatch
from exporters.shared.checks import DEFAULT_OPSET
from exporters.shared.signature import ONNX_DATATYPES
from server.contract.manifest import TensorSpec

EXAMPLE_ROWS = 4
"""Rows in the example batch: torch.export specialises axes of size 0 or 1, so never 1."""


def example_batch(
    holdout_inputs: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec], rows: int = EXAMPLE_ROWS
) -> tuple[torch.Tensor, ...]:
    """A few held-out rows per input, in signature order, repeated up to `rows` if fewer.

    `holdout_inputs` comes from `source.holdout_arrays`, which has already refused a
    missing or empty input.
    """
    tensors = []
    for spec in inputs:
        values = np.asarray(holdout_inputs[spec.name])
        picked = np.resize(values[:rows], (rows, *values.shape[1:]))
        tensors.append(torch.from_numpy(np.ascontiguousarray(picked)))
    return tuple(tensors)


def _dynamic_shapes(inputs: Sequence[TensorSpec]) -> tuple[dict[int, object], ...]:
    """One shared `batch` dim for axis 0 of every input, a free dim for other -1 axes."""
    batch = torch.export.Dim("batch")
    shapes: list[dict[int, object]] = []
    for spec in inputs:
        axes: dict[int, object] = {0: batch}
        for axis, size in enumerate(spec.shape[1:], start=1):
            if size == -1:
                axes[axis] = torch.export.Dim(f"{spec.name}_{axis}")
        shapes.append(axes)
    return tuple(shapes)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Mute exporter chatter that is no news to the user: skipped torchvision ops, and
    deprecation notices torch raises against its own internals."""
    logger = logging.getLogger("torch.onnx")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.|copyreg")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(previous)


def export_onnx(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    path: Path,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Export `module` (eval mode) to `path` as one self-contained ONNX file.

    Raises ExportError if torch cannot export the module. The graph is not checked here:
    callers run `check_model` and `verify_signature` on it, as on every derived graph.
    """
    module.eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                module,
                example,
                str(path),
                input_names=[spec.name for spec in inputs],
                output_names=[spec.name for spec in outputs],
                dynamic_shapes=_dynamic_shapes(inputs),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types; all mean "cannot export"
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc


def check_model(path: Path) -> None:
    """Run the full ONNX checker (structure, types and strict shape inference)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{path.name} fails the ONNX checker: {exc}") from exc


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    datatype = ONNX_DATATYPES.get(tensor_type.elem_type)
    if datatype is None:
        name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise SignatureMismatch(f"{value.name!r} datatype", "a v2 protocol datatype", name)
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]
    return TensorSpec(name=value.name, datatype=datatype, shape=shape)


def graph_signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's real inputs and outputs (initializers excluded) as TensorSpecs."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [_tensor_spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [_tensor_spec(v) for v in graph.output]


def verify_signature(path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """Raise SignatureMismatch unless the graph's I/O equal the declared specs exactly."""
    got_inputs, got_outputs = graph_signature(path)
    for what, expected, got in (("inputs", list(inputs), got_inputs), ("outputs", list(outputs), got_outputs)):
        if expected != got:
            raise SignatureMismatch(
                what,
                [s.model_dump() for s in expected],
                [s.model_dump() for s in got],
            )

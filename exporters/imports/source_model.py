"""The ONNX file being imported: read, checked by onnx, and made servable (`importer` step one).

Loads the file and runs onnx's full checker, refuses custom-operator domains no given
library provides, applies the asked-for ZipMap removal, and reads the signature with the
batch-axis rules of `shared.signature`. Everything here looks at the file only; running it is
`graph_runs`' part.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from exporters.errors import ExportError, ModelRefused
from exporters.imports import graph_edits
from exporters.imports.options import ImportOptions
from exporters.shared import signature
from server.contract.manifest import TensorSpec, sha256_file


@dataclass
class SourceModel:
    """The imported file and the graph that will be published (edited in `model` if at all)."""

    path: Path
    sha256: str
    size_bytes: int
    model: onnx.ModelProto
    producer_name: str | None
    producer_version: str | None
    ir_version: int
    opsets: dict[str, int]
    custom_domains: list[str]
    zipmaps: dict[str, list[int] | list[str]]
    """Outputs whose ZipMap was removed -> class labels (the original returns maps for them)."""
    inputs: list[signature.GraphTensor]
    outputs: list[signature.GraphTensor]
    batch_axis: bool
    external_data: bool
    """Weights were in files beside the model: the published graph embeds them."""
    edits: list[str] = field(default_factory=list)

    @property
    def input_specs(self) -> list[TensorSpec]:
        return [tensor.spec(self.batch_axis) for tensor in self.inputs]

    @property
    def output_specs(self) -> list[TensorSpec]:
        return [tensor.spec(self.batch_axis) for tensor in self.outputs]

    def declare_batch_dims(self) -> None:
        """Outputs declared with a fixed first axis that `graph_runs.check_batch_axis` showed to
        follow the rows: declare that axis dynamic."""
        fixed = [o.name for o in self.outputs if o.dims and isinstance(o.dims[0], int)]
        self.edits += graph_edits.declare_batch_dims(self.model, fixed)

    def save(self, path: Path) -> None:
        """The graph to publish: the file byte for byte (same sha256) unless it was edited or its
        weights lived in external data files (a version folder holds one `model.onnx`)."""
        if not self.edits and not self.external_data:
            shutil.copyfile(self.path, path)
            return
        try:
            onnx.checker.check_model(self.model, full_check=True)
        except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
            raise ModelRefused(self.path, f"the edited graph fails onnx's checker: {exc}") from exc
        onnx.save(self.model, str(path))


def read_source(path: Path, options: ImportOptions) -> SourceModel:
    """Load and check `path`; ModelRefused naming what cannot be served and how to fix it."""
    model, digest, external_data = _load_checked(path)
    producer_name, producer_version = model.producer_name or None, model.producer_version or None
    opsets = signature.opsets(model)  # before any edit adds one
    domains = _check_domains(path, model, options.op_libraries)
    zipmaps: dict[str, list[int] | list[str]] = {}
    edits: list[str] = []
    if options.strip_zipmap:
        zipmaps = graph_edits.zipmap_outputs(model)
        if not zipmaps:
            raise ModelRefused(path, "--strip-zipmap given, but no output is made by a ZipMap")
        edits = graph_edits.strip_zipmap(model)
    inputs, outputs = signature.tensors(path, model.graph)
    if options.batch_axis:
        signature.check_batch_axis(path, inputs)
    else:
        signature.check_no_batch_shapes(path, inputs)
    return SourceModel(
        path=path,
        sha256=digest,
        size_bytes=path.stat().st_size,
        model=model,
        producer_name=producer_name,
        producer_version=producer_version,
        ir_version=int(model.ir_version),
        opsets=opsets,
        custom_domains=domains,
        zipmaps=zipmaps,
        inputs=inputs,
        outputs=outputs,
        batch_axis=options.batch_axis,
        external_data=external_data,
        edits=edits,
    )


def _load_checked(path: Path) -> tuple[onnx.ModelProto, str, bool]:
    """The model with its external data loaded, after onnx's full checker (with shape inference)
    accepted it; its file's sha256; whether it had external data."""
    if not path.is_file():
        raise ModelRefused(path, "no such file")
    digest = sha256_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = any(uses_external_data(tensor) for tensor in model.graph.initializer)
        if external:
            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # protobuf DecodeError, missing external data files, ...
        raise ModelRefused(path, f"not a readable ONNX model: {exc}") from exc
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelRefused(path, f"onnx's checker rejects it: {first_line}") from exc
    return model, digest, external


def _check_domains(path: Path, model: onnx.ModelProto, libraries: Sequence[Path]) -> list[str]:
    """Custom-op domains the graph uses; refused unless libraries that provide them are given."""
    domains = signature.custom_domains(model)
    if domains and not libraries:
        used = "; ".join(f"{domain}: {', '.join(ops)}" for domain, ops in domains.items())
        raise ModelRefused(
            path,
            f"the graph uses custom operators onnxruntime does not implement "
            f"({used}); give the library that registers them with "
            f"--custom-ops-library PATH (e.g. onnxruntime-extensions' "
            f"get_library_path())",
        )
    if libraries and not domains:
        raise ModelRefused(path, "--custom-ops-library given, but the graph uses only operators onnxruntime implements")
    for library in libraries:
        if not library.is_file():
            raise ExportError(f"custom-op library {library} is not a file")
    return list(domains)

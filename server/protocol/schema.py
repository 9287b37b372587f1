"""Per-version lookups the decoders need, built once from a `ModelManifest` when the version loads
(`ServedVersion.schema`).

Non-finite policy (NaN, +-Inf): the tensor named by `manifest.features.input` (the
tabular features a v1 record is assembled into) must be finite, whichever protocol
or encoding carried it; tabular models have no meaning for NaN and would answer
garbage. Other floating-point inputs (images, embeddings, raw tensors) pass through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.contract.manifest import ModelManifest, TensorSpec
from server.protocol.datatypes import numpy_dtype


@dataclass(frozen=True, slots=True)
class InputSchema:
    """One model input: what a request tensor must look like."""

    spec: TensorSpec
    dtype: np.dtype
    finite: bool
    """Reject NaN/Inf (see module docstring)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def datatype(self) -> str:
        return self.spec.datatype


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """Inputs by name and output names of one version."""

    manifest: ModelManifest
    inputs: dict[str, InputSchema]
    output_names: tuple[str, ...]
    batch_axis: bool
    """False: shapes are whole tensors, not rows (`BatchingPolicy.batch_axis`)."""

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> ModelSchema:
        finite_input = manifest.features.input if manifest.features else None
        inputs = {
            spec.name: InputSchema(spec=spec, dtype=numpy_dtype(spec.datatype), finite=spec.name == finite_input)
            for spec in manifest.inputs
        }
        return cls(
            manifest=manifest,
            inputs=inputs,
            output_names=tuple(spec.name for spec in manifest.outputs),
            batch_axis=manifest.batching.batch_axis,
        )

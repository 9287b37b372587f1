"""Per-version lookups the decoders need, built once from a `ModelManifest` when the version loads
(`ServedVersion.schema`).

Non-finite policy (NaN, +-Inf): the tensor named by `manifest.features.input` (the
tabular features a v1 record is assembled into) must be finite, whichever protocol
or encoding carried it; tabular models have no meaning for NaN and would answer
garbage. Other floating-point inputs (images, embeddings, raw tensors) pass through.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NamedTuple

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


class FloatInput(NamedTuple):
    """A floating-point input a plain JSON request may take the short path for (`v2_request`)."""

    spec: InputSchema
    dims: tuple[int, ...]
    """The declared shape, -1 for a free axis."""
    bound: float
    """A flat list of Python floats whose absolute values sum to at most this converts to the
    input's dtype without overflow: finite, so every value rule holds without a check."""


_FLOAT_BOUNDS: dict[str, float] = {"FP32": float(np.finfo(np.float32).max), "FP64": sys.float_info.max}


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """Inputs by name and output names of one version."""

    manifest: ModelManifest
    inputs: dict[str, InputSchema]
    output_names: tuple[str, ...]
    batch_axis: bool
    """False: shapes are whole tensors, not rows (`BatchingPolicy.batch_axis`)."""
    float_inputs: dict[str, FloatInput]
    """Every input by name when all are FP32/FP64 (the short path of a JSON request); else empty."""

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> ModelSchema:
        finite_input = manifest.features.input if manifest.features else None
        inputs = {
            spec.name: InputSchema(spec=spec, dtype=numpy_dtype(spec.datatype), finite=spec.name == finite_input)
            for spec in manifest.inputs
        }
        float_inputs = {
            name: FloatInput(spec, tuple(spec.spec.shape), _FLOAT_BOUNDS[spec.datatype])
            for name, spec in inputs.items()
            if spec.datatype in _FLOAT_BOUNDS and spec.spec.shape
        }
        return cls(
            manifest=manifest,
            inputs=inputs,
            output_names=tuple(spec.name for spec in manifest.outputs),
            batch_axis=manifest.batching.batch_axis,
            float_inputs=float_inputs if len(float_inputs) == len(inputs) else {},
        )

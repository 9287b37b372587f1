"""`OnnxRuntime`: one onnxruntime session per model version, the adapter below the executor.

The only module that imports onnxruntime: its exceptions become `ModelLoadFailed` (session
creation) or `InferenceFailed` (a run). Providers come from the settings' preference order,
filtered by what this onnxruntime build offers; the one actually in use is read back from the
session, because onnxruntime-gpu lists CUDA even on a machine without a GPU and then quietly
falls back to CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from server.contract.manifest import NUMPY_DTYPES, Datatype, TensorSpec
from server.errors import InferenceFailed, ModelLoadFailed

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"

ORT_DATATYPES: dict[str, Datatype] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
"""onnxruntime type string -> v2 datatype."""


def choose_providers(preference: Sequence[str], available: Sequence[str]) -> list[str]:
    """The preferred providers this build offers, in preference order; ModelLoadFailed if none."""
    chosen = [p for p in preference if p in available]
    if not chosen:
        raise ModelLoadFailed(
            f"none of the execution providers {list(preference)} is available; "
            f"this onnxruntime offers {list(available)}"
        )
    return chosen


def _tensor_spec(arg: Any) -> TensorSpec:
    datatype = ORT_DATATYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadFailed(f"graph tensor {arg.name!r} has unsupported type {arg.type}")
    # Symbolic or unknown dims become -1; an unknown rank becomes [] (checked at run time).
    shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape or []]
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


class OnnxRuntime:
    """Runs whole batches through one `InferenceSession`; thread-safe for concurrent `run`."""

    inline_safe: bool
    """`run` blocks on this thread's computation only (the CPU provider), so a cheap batch may run
    on the event loop (executor.py). Not on a GPU: a run there waits for the device, which a
    worker's CPU time (how the executor costs a run) does not see."""

    def __init__(
        self,
        model_path: Path,
        providers: Sequence[str],
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        spinning: bool = False,
        op_libraries: Sequence[Path] = (),
        batch_axis: bool = True,
    ) -> None:
        options = ort.SessionOptions()
        for library in op_libraries:
            try:
                options.register_custom_ops_library(str(library))
            except Exception as error:  # a library for another platform or onnxruntime build
                raise ModelLoadFailed(
                    f"onnxruntime could not load the custom-op library {library.name}: {error}"
                ) from error
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        spin = "1" if spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        chosen = choose_providers(providers, ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadFailed(f"onnxruntime could not load {model_path.name}: {error}") from error
        self._session: ort.InferenceSession | None = session
        in_use: list[str] = session.get_providers()
        self._provider = in_use[0]
        if self._provider != chosen[0]:
            log.warning("%s: asked for %s, onnxruntime is using %s", model_path, chosen, in_use)
        self.inputs = [_tensor_spec(arg) for arg in session.get_inputs()]
        self.outputs = [_tensor_spec(arg) for arg in session.get_outputs()]
        self._output_names = [spec.name for spec in self.outputs]
        self._output_dtypes = {spec.name: NUMPY_DTYPES[spec.datatype] for spec in self.outputs}
        self._text_inputs = [spec.name for spec in self.inputs if spec.datatype == "BYTES"]
        self._iobinding = _IoBindingRunner("cuda") if self._provider == CUDA else None
        self.inline_safe = self._provider == "CPUExecutionProvider"
        # The CPU provider's runs go straight to the session's binding: `InferenceSession.run`'s
        # Python checks (input names, which the decoder checked against this graph's schema;
        # OrtValue ownership and graph capture, which plain arrays never need; falling back to
        # another provider, which the CPU provider never does) cost ~10 us a run, as much as
        # a third of a one-row run of the demo MLP.
        self._direct = self.inline_safe and hasattr(session, "_sess")
        self._batch_axis = batch_axis

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime put first for this session."""
        return self._provider

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session  # a local reference keeps a concurrent close() harmless
        if session is None:
            raise InferenceFailed("runtime is closed")
        if self._text_inputs:
            inputs = _with_text_inputs(inputs, self._text_inputs)
        try:
            if self._direct:
                values = session._sess.run(self._output_names, inputs, None)
            elif self._iobinding is not None:
                values = self._iobinding.run(session, inputs, self._output_names)
            else:
                values = session.run(self._output_names, inputs)
        except Exception as error:
            raise InferenceFailed(f"onnxruntime failed: {error}") from error
        rows = next(iter(inputs.values())).shape[0] if self._batch_axis else None
        return self._checked(values, rows)

    def _checked(self, values: Sequence[np.ndarray], rows: int | None) -> dict[str, np.ndarray]:
        """Outputs by name, with the declared dtypes and (with a batch axis) `rows` rows each."""
        outputs: dict[str, np.ndarray] = {}
        for name, value in zip(self._output_names, values, strict=True):
            expected = self._output_dtypes[name]
            if value.dtype != expected and not (expected.kind == "O" and value.dtype.kind in "OSU"):
                raise InferenceFailed(f"output {name!r} has dtype {value.dtype}, graph declares {expected}")
            if rows is not None and (value.ndim == 0 or value.shape[0] != rows):
                got = "no batch axis" if value.ndim == 0 else f"{value.shape[0]} rows"
                raise InferenceFailed(f"output {name!r} has {got} for {rows} input rows")
            outputs[name] = value
        return outputs

    def close(self) -> None:
        self._session = None


def _with_text_inputs(inputs: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """BYTES tensors arrive as object arrays of `bytes`; onnxruntime would store `str(b"..")`
    (the repr) in a string tensor, so they are decoded as UTF-8 first."""
    converted = dict(inputs)
    for name in names:
        array = inputs[name]
        try:
            text = [item.decode() if isinstance(item, bytes) else item for item in array.ravel()]
        except UnicodeDecodeError as error:
            raise InferenceFailed(f"input {name!r}: BYTES element is not UTF-8 text ({error})") from error
        converted[name] = np.array(text, dtype=object).reshape(array.shape)
    return converted


class _IoBindingRunner:
    """The CUDA path: inputs copied to the device once, outputs allocated there by onnxruntime
    and copied back in one step, instead of `session.run`'s per-call staging.

    `device` is "cuda" in production; it is a parameter so the binding logic itself can be
    exercised on CPU-only machines with "cpu".
    """

    def __init__(self, device: str, device_id: int = 0) -> None:
        self._device = device
        self._device_id = device_id

    def run(
        self, session: ort.InferenceSession, inputs: dict[str, np.ndarray], output_names: Sequence[str]
    ) -> list[np.ndarray]:
        binding = session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in output_names:
            binding.bind_output(name, self._device, self._device_id)
        session.run_with_iobinding(binding)
        values: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return values

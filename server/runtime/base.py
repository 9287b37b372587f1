"""The synchronous Runtime seam: one model version's graph, called only from `executor.py`."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from server.contract.manifest import TensorSpec


class Runtime(Protocol):
    """Runs whole batches; never sees the event loop.

    `run` takes every model input with the batch on axis 0 and returns every output
    (or those named in `output_names`) with the same number of rows.
    """

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def provider(self) -> str:
        """Execution provider actually in use (e.g. "CPUExecutionProvider")."""
        ...

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

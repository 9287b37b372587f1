"""Where a training process computes (`--device auto|cpu|cuda`) and in what precision (`--amp`, CUDA only).

Mixed precision runs the forward pass and loss under `torch.autocast`: bfloat16 where the GPU
supports it (no loss scaling needed), float16 with a `GradScaler` otherwise. Weights, the
optimizer and validation stay float32, so checkpoints and exports are the same either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from training.config import DeviceChoice

AmpMode = Literal["bf16", "fp16"]
_AMP_DTYPES: dict[AmpMode, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """The asked-for device cannot be used here (the message says why)."""


def resolve_device(choice: DeviceChoice, local_rank: int = 0) -> torch.device:
    """`cpu`, or the CUDA device of this process's local rank (`auto`: CUDA when there is one)."""
    if choice == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if choice == "cuda":
            raise DeviceError(
                f"--device cuda: CUDA is not available (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda or 'none'})"
            )
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise DeviceError(
            f"local rank {local_rank} has no GPU of its own: {visible} visible; "
            "start at most one process per GPU (--nproc)"
        )
    return torch.device("cuda", local_rank)


def choose_amp(device: torch.device, requested: bool, bf16_supported: bool) -> tuple[AmpMode | None, str | None]:
    """(mixed-precision mode or None, a note for the user when the request changes nothing)."""
    if not requested:
        return None, None
    if device.type != "cuda":
        return None, f"--amp: mixed precision runs on CUDA only; training in float32 on {device.type}"
    return ("bf16" if bf16_supported else "fp16"), None


@dataclass(frozen=True)
class Precision:
    """How forward passes run and whether losses are scaled (float16 needs it, bfloat16 does not)."""

    device: torch.device
    amp: AmpMode | None = None

    def __post_init__(self) -> None:
        if self.amp is not None and self.amp not in get_args(AmpMode):
            raise ValueError(f"unknown mixed-precision mode {self.amp!r}")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Forward pass and loss in the mixed-precision dtype; a no-op in float32."""
        if self.amp is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=_AMP_DTYPES[self.amp]):
            yield

    def scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled for float16 only (otherwise its calls pass straight through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

"""What a training run trains and how (`TrainConfig`, device choices); free of torch so `training/cli.py` can show its defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

DeviceChoice = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES: tuple[DeviceChoice, ...] = get_args(DeviceChoice)
DEFAULT_DIST_TIMEOUT_S = 300.0
"""Longest a rank waits for the others at a collective (a validation gather, a gradient all-reduce)."""


@dataclass(frozen=True)
class TrainConfig:
    """What a run trains and how; everything here is recorded in the checkpoint's metadata."""

    name: str = "fraud"
    architecture: str = "mlp"
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    """Epochs to run (after the parent's, when resuming), unless early stopping ends sooner."""
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    """Epochs without a lower validation loss before stopping."""
    seed: int = 0
    val_fraction: float = 0.2
    holdout_rows: int = 1024
    """Validation rows stored in the checkpoint for exporters' parity checks."""
    quiet: bool = False

    def hyperparameters(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("name", "architecture", "architecture_kwargs", "seed", "quiet"):
            values.pop(key)
        return values

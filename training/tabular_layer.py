"""The fitted tabular preprocessing as an nn.Module with buffers, so exported graphs take raw features."""

from __future__ import annotations

import torch
from torch import nn

from training.tabular_transform import TabularTransform


class TabularPreprocessor(nn.Module):
    """Clip + standardise numeric columns and one-hot encode categorical ones, in torch.

    Mirrors `TabularTransform.apply` operation for operation (float32 throughout) so the
    served graph and the training pipeline agree to float rounding.
    """

    numeric_index: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    one_hot_index: torch.Tensor
    one_hot_value: torch.Tensor

    def __init__(self, transform: TabularTransform) -> None:
        super().__init__()
        sources, values = transform.one_hot_sources()

        def floats(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        self.register_buffer("numeric_index", torch.tensor(transform.numeric_indices(), dtype=torch.long))
        self.register_buffer("lower", floats([c.lower for c in transform.numeric]))
        self.register_buffer("upper", floats([c.upper for c in transform.numeric]))
        self.register_buffer("mean", floats([c.mean for c in transform.numeric]))
        self.register_buffer("std", floats([c.std for c in transform.numeric]))
        self.register_buffer("one_hot_index", torch.tensor(sources, dtype=torch.long))
        self.register_buffer("one_hot_value", floats(values))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        numeric = raw.index_select(1, self.numeric_index)
        clipped = torch.minimum(torch.maximum(numeric, self.lower), self.upper)
        standardised = (clipped - self.mean) / self.std
        one_hot = (raw.index_select(1, self.one_hot_index) == self.one_hot_value).to(raw.dtype)
        return torch.cat([standardised, one_hot], dim=1)

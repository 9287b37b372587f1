"""Mini-batches of in-memory training rows: this rank's share, reshuffled per epoch, pinned for CUDA.

One process walks a permutation seeded by (seed, epoch); under torchrun each rank takes its
share through `DistributedSampler` (seeded the same way, epoch set each epoch), so ranks see
disjoint rows and together the whole training split. Batches are gathered by indexing the
tensors with a whole list of rows at once, not row by row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from training.distributed import Placement


class _Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Inputs and targets indexed by a list of row numbers (one batch per item)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(rows)
        return self.inputs[index], self.targets[index]


class SeededPermutation(Sampler[int]):
    """All rows in an order drawn from (seed, epoch): the single-process shuffle."""

    def __init__(self, rows: int, seed: int) -> None:
        self.rows = rows
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.rows, generator=generator).tolist())

    def __len__(self) -> int:
        return self.rows


class TrainBatches:
    """Iterable of (inputs, targets) batches for one epoch at a time; call `set_epoch` first."""

    def __init__(
        self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int, placement: Placement
    ) -> None:
        rows = _Rows(inputs, targets)
        self.sampler: SeededPermutation | DistributedSampler[int]
        if placement.distributed:
            self.sampler = DistributedSampler(
                rows, num_replicas=placement.world_size, rank=placement.rank, shuffle=True, seed=seed, drop_last=False
            )
        else:
            self.sampler = SeededPermutation(len(rows), seed)
        # `batch_size` is the global batch: each of N ranks takes 1/N of it, so the averaged
        # gradient step is the single-process one and results stay comparable across world sizes.
        self.rank_batch_size = math.ceil(batch_size / placement.world_size)
        self.loader = DataLoader(
            rows,
            sampler=BatchSampler(self.sampler, self.rank_batch_size, drop_last=False),
            batch_size=None,
            pin_memory=placement.device.type == "cuda",
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)

"""This process's place in a training run (`Placement`) and the few collectives the trainer needs.

`torchrun` (or `hotserve train --nproc N`, which starts it) sets RANK, WORLD_SIZE and
LOCAL_RANK; the process group is gloo on CPU and nccl on CUDA, and every collective gives
up after `timeout_s`, so a rank that dies or hangs ends the run with an error instead of a
hang (torchrun then stops the other ranks and reports which one failed). A plain
`hotserve train` is a world of one and never touches torch.distributed.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from training.config import DEFAULT_DIST_TIMEOUT_S, DeviceChoice
from training.device import AmpMode, choose_amp, resolve_device
from training.launch import launched_by_torchrun

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
FAULT_ENV = "HOTSERVE_TRAIN_FAULT"
"""A test hook, not a setting: fault injection for tests and failure drills. `RANK:EPOCH` makes
that rank kill itself (SIGKILL) as that epoch starts, as an out-of-memory kill or a lost node
would; `RANK:EPOCH:hang` makes it stop responding instead, as a deadlocked rank or a dead network
link would. Read once when the run starts; a malformed value, a rank outside the world or a hang
in a world of one (nothing would ever time it out) refuses to start the run."""
_FAULT = re.compile(r"(?P<rank>\d+):(?P<epoch>\d+)(?::(?P<mode>kill|hang))?")


class FaultSpecInvalid(ValueError):
    """`HOTSERVE_TRAIN_FAULT` is set to something the hook cannot honour."""


@dataclass(frozen=True)
class Fault:
    """What the fault hook does: kill or hang `rank` as `epoch` starts."""

    rank: int
    epoch: int
    hang: bool = False


def fault_from_env(world_size: int, environ: Mapping[str, str] = os.environ) -> Fault | None:
    """The fault `HOTSERVE_TRAIN_FAULT` asks for (None when unset); FaultSpecInvalid, with the
    reason, for a value the hook cannot honour."""
    value = environ.get(FAULT_ENV, "").strip()
    if not value:
        return None
    where = f"{FAULT_ENV}={value!r} (a test hook for failure drills; unset it to train normally)"
    match = _FAULT.fullmatch(value)
    if match is None:
        raise FaultSpecInvalid(f"{where}: expected RANK:EPOCH or RANK:EPOCH:hang, e.g. 1:2")
    fault = Fault(int(match["rank"]), int(match["epoch"]), match["mode"] == "hang")
    if fault.rank >= world_size:
        raise FaultSpecInvalid(f"{where}: rank {fault.rank} is not in this run of {world_size} process(es)")
    if fault.hang and world_size == 1:
        raise FaultSpecInvalid(f"{where}: a hang in a single-process run would never end (no other rank times out)")
    return fault


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank died, hung or cannot be reached."""


@dataclass(frozen=True)
class Placement:
    """Rank, world size, device and precision of this training process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    """gloo or nccl; None for a single process (no process group)."""
    amp: AmpMode | None = None
    notes: tuple[str, ...] = ()
    """What the user should hear about how the request was honoured (e.g. --amp on CPU)."""
    fault: Fault | None = None
    """The test hook's fault (`HOTSERVE_TRAIN_FAULT`), read and checked once at start."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports and writes the checkpoint."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(
    device_choice: DeviceChoice = "auto", amp: bool = False, timeout_s: float = DEFAULT_DIST_TIMEOUT_S
) -> Placement:
    """This process's placement; joins the process group when torchrun started several ranks."""
    rank, world, local = 0, 1, 0
    if launched_by_torchrun():
        rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    fault = fault_from_env(world)  # before joining the group: a bad value stops every rank at once
    device = resolve_device(device_choice, local)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    amp_mode, note = choose_amp(device, amp, bf16)
    backend = None
    if world > 1:
        if timeout_s <= 0:
            raise ValueError(f"the collective timeout must be positive, got {timeout_s}")
        backend = BACKENDS[device.type]
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(
                backend, timeout=timedelta(seconds=timeout_s), device_id=device if device.type == "cuda" else None
            )
        except RuntimeError as exc:  # torch.distributed.DistError included
            raise DistributedError(f"rank {rank}: cannot join the {backend} process group: {exc}") from exc
    return Placement(rank, world, local, device, backend, amp_mode, tuple(n for n in (note,) if n), fault)


def stop(placement: Placement) -> None:
    """Leave the process group (if this process joined one)."""
    if placement.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(placement: Placement, rows: int) -> slice:
    """This rank's contiguous share of `rows` rows (shares differ by at most one row)."""
    bounds = np.linspace(0, rows, placement.world_size + 1).round().astype(int)
    return slice(int(bounds[placement.rank]), int(bounds[placement.rank + 1]))


def gather_rows(placement: Placement, local: np.ndarray) -> np.ndarray:
    """Every rank's `local` rows, concatenated in rank order, on every rank."""
    if not placement.distributed:
        return local
    pieces: list[np.ndarray | None] = [None] * placement.world_size
    try:
        dist.all_gather_object(pieces, local)
    except RuntimeError as exc:  # torch.distributed.DistError included
        raise DistributedError(f"rank {placement.rank}: gathering validation outputs failed: {exc}") from exc
    return np.concatenate([p for p in pieces if p is not None])


def sum_across(placement: Placement, values: list[float]) -> list[float]:
    """Element-wise sums of `values` over all ranks."""
    if not placement.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=placement.device)
    try:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    except RuntimeError as exc:  # torch.distributed.DistError included
        raise DistributedError(f"rank {placement.rank}: summing across ranks failed: {exc}") from exc
    return [float(v) for v in tensor.cpu()]


def inject_fault(placement: Placement, epoch: int) -> None:
    """Kill or hang this process if the test hook's fault names this rank and epoch (see FAULT_ENV)."""
    fault = placement.fault
    if fault is None or fault.rank != placement.rank or fault.epoch != epoch:
        return
    if fault.hang:
        threading.Event().wait()  # never set: the other ranks' next collective must time out
    os.kill(os.getpid(), signal.SIGKILL)

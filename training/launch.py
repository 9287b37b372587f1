"""`hotserve train --nproc N`: start torchrun with N ranks of `python -m training`, the same options minus --nproc.

torchrun, not a launcher of ours, owns the ranks: it sets RANK/WORLD_SIZE/LOCAL_RANK, watches
them, stops the others when one fails and reports which one did. This module only rebuilds
the command line (`options.worker_argv`) and turns torchrun's exit status into one line for the user.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from training.options import worker_argv

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
RANK_ERRORS_ENV = "HOTSERVE_RANK_ERRORS"
"""Folder where each rank leaves its one-line error, for the launcher to repeat last."""


def record_rank_error(line: str) -> None:
    """Under `hotserve train --nproc`, leave this rank's error line for the launcher (else nothing)."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    if folder:
        Path(folder, f"rank-{os.environ.get('RANK', '0')}.txt").write_text(line + "\n")


def first_rank_error(folder: Path) -> str | None:
    """The error line the first failing rank left (the cause; later failures mostly follow from it)."""
    lines = sorted(folder.glob("rank-*.txt"), key=lambda path: (path.stat().st_mtime_ns, path.name))
    return lines[0].read_text().strip() if lines else None


def launched_by_torchrun() -> bool:
    """Whether this process is a torchrun rank (torchrun sets these for each one)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """One machine, `nproc` ranks, a rendezvous on a free local port, no restarts."""
    return [*TORCHRUN, "--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0", "-m", "training", *argv]


def _loopback_env() -> dict[str, str]:
    """Keep gloo's connections on the loopback interface: the ranks all live on this machine."""
    names = {name for _, name in socket.if_nameindex()}
    return {"GLOO_SOCKET_IFNAME": "lo"} if "lo" in names else {}


def launch(nproc: int, args: argparse.Namespace) -> int:
    """Run torchrun in the foreground; its exit status, with a one-line verdict on failure and,
    as the last line, the error of the rank that failed (torchrun's traceback comes before)."""
    command = torchrun_command(nproc, worker_argv(args))
    print(f"starting {nproc} processes: {' '.join(command[1:])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hotserve-ranks-") as errors:
        env = {**_loopback_env(), **os.environ, RANK_ERRORS_ENV: errors}
        done = subprocess.run(command, env=env, cwd=Path.cwd(), check=False)
        if done.returncode == 0:
            return 0
        print(
            f"hotserve train: error: distributed training failed (torchrun exit status {done.returncode}); "
            "torchrun's report above names the rank that failed first and how",
            file=sys.stderr,
        )
        rank_error = first_rank_error(Path(errors))
        if rank_error is not None:
            print(rank_error, file=sys.stderr)
    return done.returncode

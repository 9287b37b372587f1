"""`hotserve train --nproc N`: start torchrun with N ranks of `python -m training`, the same options minus --nproc.

torchrun, not a launcher of ours, owns the ranks: it sets RANK/WORLD_SIZE/LOCAL_RANK, watches
them, stops the others when one fails and reports which one did. This module only rebuilds
the command line and turns torchrun's exit status into one line for the user.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def launched_by_torchrun() -> bool:
    """Whether this process is a torchrun rank (torchrun sets these for each one)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, tuple):  # a --model-arg KEY=VALUE pair, VALUE parsed as JSON
        key, item = value
        return f"{key}={json.dumps(item)}"
    return str(value)


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The options in `args` as a command line for each rank: the same run, without --nproc."""
    from training.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "nproc"):
            continue
        flag, value = action.option_strings[0], getattr(args, action.dest)
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, _text(item)]
        elif value is not None and value != action.default:
            argv += [flag, _text(value)]
    return argv


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """One machine, `nproc` ranks, a rendezvous on a free local port, no restarts."""
    return [*TORCHRUN, "--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0", "-m", "training", *argv]


def _loopback_env() -> dict[str, str]:
    """Keep gloo's connections on the loopback interface: the ranks all live on this machine."""
    names = {name for _, name in socket.if_nameindex()}
    return {"GLOO_SOCKET_IFNAME": "lo"} if "lo" in names else {}


def launch(nproc: int, args: argparse.Namespace) -> int:
    """Run torchrun in the foreground; its exit status, with a one-line verdict on failure."""
    command = torchrun_command(nproc, worker_argv(args))
    env = {**_loopback_env(), **os.environ}
    print(f"starting {nproc} processes: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, env=env, cwd=Path.cwd(), check=False)
    if done.returncode != 0:
        print(
            f"hotserve train: error: distributed training failed (torchrun exit status {done.returncode}); "
            "torchrun's report above names the rank that failed first and how",
            file=sys.stderr,
        )
    return done.returncode

"""The training fault hook (`HOTSERVE_TRAIN_FAULT`): a test hook, read once, refused when malformed."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from training import cli
from training.distributed import FAULT_ENV, Fault, FaultSpecInvalid, fault_from_env


@pytest.mark.parametrize(
    ("value", "world_size", "fault"),
    [("", 1, None), ("1:2", 2, Fault(1, 2)), (" 0:3:kill ", 1, Fault(0, 3)), ("1:2:hang", 2, Fault(1, 2, hang=True))],
)
def test_a_well_formed_fault_is_read(value: str, world_size: int, fault: Fault | None) -> None:
    assert fault_from_env(world_size, {FAULT_ENV: value}) == fault


@pytest.mark.parametrize(
    ("value", "world_size", "message"),
    [
        ("1", 2, "expected RANK:EPOCH or RANK:EPOCH:hang"),
        ("one:two", 2, "expected RANK:EPOCH or RANK:EPOCH:hang"),
        ("1:2:explode", 2, "expected RANK:EPOCH or RANK:EPOCH:hang"),
        ("-1:2", 2, "expected RANK:EPOCH or RANK:EPOCH:hang"),
        ("2:1", 2, "rank 2 is not in this run of 2 process(es)"),
        ("0:1:hang", 1, "a hang in a single-process run would never end"),
    ],
)
def test_a_fault_the_hook_cannot_honour_is_refused_with_the_reason(value: str, world_size: int, message: str) -> None:
    with pytest.raises(FaultSpecInvalid, match=rf"HOTSERVE_TRAIN_FAULT=.*a test hook.*{re.escape(message)}"):
        fault_from_env(world_size, {FAULT_ENV: value})


def test_hotserve_train_refuses_a_malformed_fault_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(FAULT_ENV, "0:1:hang")  # would hang this single process forever
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = ["--dataset", "demo:fraud", "--rows", "200", "--epochs", "2", "--quiet", "--checkpoints", str(tmp_path)]
    assert cli.run(parser.parse_args(args)) == 2
    assert "hotserve train: error: HOTSERVE_TRAIN_FAULT='0:1:hang'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written

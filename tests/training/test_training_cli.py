"""`hotserve train`: defaults, options, resume and error reporting through `training.cli`.

The parser is built from `training.cli` alone (as `server.cli` builds its `train` subparser),
so these tests do not depend on the other subcommands' modules.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from training import cli
from training.checkpoints import load_checkpoint, read_metadata
from training.datasets import delivery, fraud
from training.launch import torchrun_command, worker_argv

REPO = Path(__file__).resolve().parents[2]


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main(argv: list[str]) -> int:
    """`hotserve ARGV` for the `train` subcommand."""
    assert argv[0] == "train"
    parser = argparse.ArgumentParser(prog="hotserve train")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv[1:]))


TINY = ["--rows", "600", "--epochs", "2", "--hidden", "8", "--quiet"]


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import sys, training.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_defaults_train_the_fraud_mlp_on_demo_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY]) == 0
    out = capsys.readouterr().out
    assert "wrote checkpoints/fraud/1 (model fraud version 1" in out
    assert "auc=" in out and "log_loss=" in out
    meta = read_metadata(tmp_path / "checkpoints" / "fraud" / "1")
    assert (meta.architecture, meta.dataset_path, meta.architecture_kwargs["hidden"]) == ("mlp", "demo:fraud", [8])


def test_resume_writes_a_child_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ck"
    assert main(["train", *TINY, "--checkpoints", str(root), "--name", "m"]) == 0
    assert (
        main(["train", "--resume", str(root / "m" / "1"), "--epochs", "1", "--checkpoints", str(root), "--quiet"]) == 0
    )
    child = load_checkpoint(root / "m" / "2").metadata
    parent = read_metadata(root / "m" / "1")
    assert child.parent_version == 1
    assert child.dataset == parent.dataset and child.architecture_kwargs == parent.architecture_kwargs
    assert child.epochs_completed == parent.best_epoch + 1


def test_csv_with_feature_options(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    fraud.generate(rows=600, seed=2).to_csv(path, index=False)
    args = [
        "train",
        "--dataset",
        str(path),
        "--features",
        "amount,merchant_category,cust_txn_count_7d",
        "--label",
        "is_fraud",
        "--entity-key",
        "customer_id",
        "--request-features",
        "amount,merchant_category",
        "--categorical",
        "merchant_category",
        "--epochs",
        "1",
        "--quiet",
        "--checkpoints",
        str(tmp_path / "ck"),
    ]
    assert main(args) == 0
    meta = read_metadata(tmp_path / "ck" / "tx" / "1")
    assert meta.features is not None and meta.features.store_features == ["cust_txn_count_7d"]
    assert meta.preprocessing is not None and [c.name for c in meta.preprocessing.categorical] == ["merchant_category"]


def test_bad_column_exits_with_its_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tx.parquet"
    pd.DataFrame({"a": [1.0, 2.0], "label": [0, 1]}).to_parquet(path)
    assert main(["train", "--dataset", str(path), "--features", "a,b", "--checkpoints", str(tmp_path)]) == 2
    assert "column 'b': feature column missing" in capsys.readouterr().err


def test_architecture_parameters_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *TINY, "--model-arg", "depth=3", "--checkpoints", str(tmp_path)]) == 2
    assert "has no parameter(s) ['depth']" in capsys.readouterr().err


def test_inferred_task_is_said_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deliveries.csv"
    delivery.generate(rows=400, seed=1).to_csv(path, index=False)
    assert (
        main(
            [
                "train",
                "--dataset",
                str(path),
                "--label",
                "minutes",
                "--categorical",
                "zone",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--quiet",
                "--checkpoints",
                str(tmp_path / "ck"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "note: task regression inferred from label column 'minutes': fractional numbers (--task sets it)" in out
    assert "regression, best epoch 1 of 1" in out and "rmse=" in out and "r2=" in out
    meta = read_metadata(tmp_path / "ck" / "deliveries" / "1")
    assert (meta.task, meta.dataset.task, meta.world_size, meta.backend, meta.device) == (
        "regression",
        "regression",
        1,
        None,
        "cpu",
    )


def test_a_float_label_for_multiclass_is_refused_by_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deliveries.csv"
    delivery.generate(rows=50, seed=1).to_csv(path, index=False)
    assert (
        main(
            [
                "train",
                "--dataset",
                str(path),
                "--label",
                "minutes",
                "--task",
                "multiclass",
                "--checkpoints",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "column 'minutes': multiclass labels must be class names or whole numbers" in capsys.readouterr().err


@pytest.mark.skipif(torch_cuda_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_is_refused_where_there_is_none_and_amp_is_a_note_on_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *TINY, "--device", "cuda", "--checkpoints", str(tmp_path)]) == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert main(["train", *TINY, "--amp", "--checkpoints", str(tmp_path)]) == 0
    assert "note: --amp: mixed precision runs on CUDA only; training in float32 on cpu" in capsys.readouterr().out
    assert read_metadata(tmp_path / "fraud" / "1").amp is None


def test_nproc_must_be_positive_and_is_not_for_torchrun_ranks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *TINY, "--nproc", "0"]) == 2
    assert "--nproc must be at least 1" in capsys.readouterr().err
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    assert main(["train", *TINY, "--nproc", "2"]) == 2
    assert "under torchrun leave it out" in capsys.readouterr().err


def test_each_rank_gets_the_same_options_without_nproc() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = [
        "--dataset",
        "x.csv",
        "--features",
        "a,b",
        "--hidden",
        "32,16",
        "--model-arg",
        "dropout=0.2",
        "--model-arg",
        "note=text",
        "--task",
        "multiclass",
        "--amp",
        "--nproc",
        "4",
        "--dist-timeout-s",
        "60",
        "--checkpoints",
        "ck",
        "--quiet",
    ]
    args = parser.parse_args(argv)
    rank_argv = worker_argv(args)
    assert "--nproc" not in rank_argv
    again = parser.parse_args(rank_argv)
    assert {**vars(again), "nproc": 4} == vars(args)
    assert torchrun_command(4, rank_argv)[-len(rank_argv) - 2 :] == ["-m", "training", *rank_argv]

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
from training.datasets import fraud

REPO = Path(__file__).resolve().parents[2]


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


def test_defaults_train_the_fraud_mlp_on_demo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
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
    assert main(["train", "--resume", str(root / "m" / "1"), "--epochs", "1", "--checkpoints", str(root),
                 "--quiet"]) == 0
    child = load_checkpoint(root / "m" / "2").metadata
    parent = read_metadata(root / "m" / "1")
    assert child.parent_version == 1
    assert child.dataset == parent.dataset and child.architecture_kwargs == parent.architecture_kwargs
    assert child.epochs_completed == parent.best_epoch + 1


def test_csv_with_feature_options(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    fraud.generate(rows=600, seed=2).to_csv(path, index=False)
    args = ["train", "--dataset", str(path), "--features", "amount,merchant_category,cust_txn_count_7d",
            "--label", "is_fraud", "--entity-key", "customer_id", "--request-features", "amount,merchant_category",
            "--categorical", "merchant_category", "--epochs", "1", "--quiet", "--checkpoints", str(tmp_path / "ck")]
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

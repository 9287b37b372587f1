"""`hotserve retrain` without a server (`--champion`, `--no-release`): captured rows of a concept
shift in the contract's Parquet, a champion exported from a tiny checkpoint, and the outcomes:
a better challenger exported with its lineage, too few rows refused, a challenger no better stopped."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from demos import fraud
from exporters.export.options import ExportOptions
from exporters.export.pipeline import export_checkpoint
from server.capture.record import CaptureRecord, partition_dir, records_to_table
from server.cli import main
from server.contract.manifest import ModelManifest
from training.checkpoints import read_metadata
from training.config import TrainConfig
from training.datasets import Dataset
from training.retrain.run import FAILED, NOT_BETTER, TOO_FEW_ROWS
from training.trainer import TrainResult, train

START = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
ROWS = 3000


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, tiny_fraud: Dataset, tiny_mlp: TrainConfig) -> tuple[Path, Path]:
    """(checkpoints root, repository) holding `tiny` v1, exported with a decision threshold of 0.3."""
    root = tmp_path_factory.mktemp("champion")
    result = train(tiny_fraud, tiny_mlp, root / "checkpoints")
    assert isinstance(result, TrainResult)
    export_checkpoint(result.path, root / "repository", ExportOptions(decision_threshold=0.3, max_batch_size=32))
    return root / "checkpoints", root / "repository"


@pytest.fixture
def setup(tmp_path: Path, champion: tuple[Path, Path]) -> tuple[Path, Path, Path]:
    """A copy of the champion's checkpoints and repository, and an empty sink, for one test."""
    checkpoints, repository = tmp_path / "checkpoints", tmp_path / "repository"
    shutil.copytree(champion[0], checkpoints)
    shutil.copytree(champion[1], repository)
    return checkpoints, repository, tmp_path / "sink"


def write_traffic(sink: Path, rows: int, labels: np.ndarray | None = None, seed: int = 5) -> None:
    """`rows` shifted demo transactions answered by `tiny` v1 over two hours, and their labels."""
    table = fraud.columns(rows, seed, shifted=True)
    features = fraud.REQUEST_FEATURES + fraud.STORE_FEATURES
    times = [START + timedelta(seconds=7200 * i / rows) for i in range(rows)]
    records = [
        CaptureRecord(
            request_id=f"req-{i}",
            row=0,
            ts=times[i],
            model="tiny",
            version=1,
            protocol="v1",
            inputs={name: float(table[name][i]) for name in features},
            outputs={"probability": 0.0},
        )
        for i in range(rows)
    ]
    for hour in (0, 1):
        part = [r for r in records if r.ts.hour == START.hour + hour]
        folder = sink / partition_dir("tiny", 1, part[0].ts)
        folder.mkdir(parents=True)
        pq.write_table(records_to_table(part), folder / "part-0.parquet")
    label = table[fraud.LABEL] if labels is None else labels
    folder = sink / "tiny" / "labels" / "hour=2026-05-01T10"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "request_id": [f"req-{i}" for i in range(rows)],
                "row": pa.array([0] * rows, pa.int32()),
                "label": pa.array(label, pa.float64()),
                "ts": pa.array([START + timedelta(hours=2)] * rows, pa.timestamp("us", tz="UTC")),
                "version": pa.array([1] * rows, pa.int32()),
            }
        ),
        folder / "labels.parquet",
    )


def retrain(checkpoints: Path, repository: Path, sink: Path | str, *extra: str) -> int:
    return main(
        [
            "retrain",
            "tiny",
            "--sink",
            str(sink),
            "--since",
            START.isoformat(),
            "--until",
            (START + timedelta(hours=2)).isoformat(),
            "--repository",
            str(repository),
            "--checkpoints",
            str(checkpoints),
            "--champion",
            "1",
            "--no-release",
            *extra,
        ]
    )


def test_a_better_challenger_is_exported_with_the_capture_window_and_rows_in_its_lineage(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repository, sink = setup
    write_traffic(sink, ROWS)

    assert retrain(checkpoints, repository, sink, "--epochs", "8") == 0

    out = capsys.readouterr().out
    assert "auc: challenger" in out and ": better" in out
    manifest = ModelManifest.read(repository / "tiny" / "2")
    lineage = manifest.lineage.retraining
    assert lineage is not None
    assert (lineage.champion_version, lineage.warm_start, lineage.served_versions) == (1, True, [1])
    assert lineage.window_start == START.isoformat() and lineage.capture_sink == str(sink)
    assert (lineage.captured_rows, lineage.labelled_rows, lineage.labels_read) == (ROWS, ROWS, ROWS)
    assert lineage.train_rows + lineage.holdout_rows == ROWS and lineage.holdout_rows == round(ROWS * 0.2)
    assert lineage.challenger_holdout["auc"] > lineage.champion_holdout["auc"]
    assert manifest.lineage.parent_version == 1
    # served like the champion: its threshold, batching and feature view
    champion = ModelManifest.read(repository / "tiny" / "1")
    assert manifest.prediction == champion.prediction and manifest.batching == champion.batching
    assert manifest.features == champion.features
    # the checkpoint records the same, and its training table is the file its lineage digests
    meta = read_metadata(checkpoints / "tiny" / "2")
    assert meta.retraining == lineage and Path(meta.dataset_path).is_file()


def test_too_few_labelled_rows_are_refused_with_the_counts(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repository, sink = setup
    write_traffic(sink, 400)

    assert retrain(checkpoints, repository, sink) == TOO_FEW_ROWS

    err = capsys.readouterr().err
    assert "400 rows captured in the window, 400 labels read, 400 labelled rows usable" in err
    assert "at least 1000 needed" in err
    assert not (checkpoints / "tiny" / "2").exists() and not (repository / "tiny" / "2").exists()


def test_too_few_rows_of_a_class_in_the_holdout_are_refused(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repository, sink = setup
    labels = np.zeros(ROWS)
    labels[: ROWS // 2 : 10] = 1.0  # every fraud among the oldest rows
    write_traffic(sink, ROWS, labels)

    assert retrain(checkpoints, repository, sink) == TOO_FEW_ROWS
    assert "0 of label 1 in the holdout rows" in capsys.readouterr().err


def test_a_challenger_no_better_is_not_exported(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repository, sink = setup
    noise = (np.random.default_rng(9).random(ROWS) < 0.05).astype(np.float64)  # labels nothing predicts
    write_traffic(sink, ROWS, noise)

    assert retrain(checkpoints, repository, sink) == NOT_BETTER

    assert "not better" in capsys.readouterr().err
    assert (checkpoints / "tiny" / "2").is_dir() and not (repository / "tiny" / "2").exists()


def test_a_sink_that_is_not_one_fails_with_the_reason(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints, repository, _ = setup
    assert retrain(checkpoints, repository, "ftp://somewhere") == FAILED
    assert "expected a directory or s3://bucket/prefix" in capsys.readouterr().err
    assert retrain(checkpoints, repository, checkpoints / "nowhere") == FAILED
    assert "is not a directory" in capsys.readouterr().err


def test_every_address_of_a_headless_service_is_a_replica_to_rescan() -> None:
    from training.retrain.cli import replica_urls

    assert "http://127.0.0.1:8080" in replica_urls("localhost:8080")
    assert replica_urls("127.0.0.1:9000") == ["http://127.0.0.1:9000"]
    for bad in ("no-port", "host:http", ":8080"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            replica_urls(bad)
    with pytest.raises(ValueError, match="--rescan-dns"):
        replica_urls("no-such-host.invalid:8080")

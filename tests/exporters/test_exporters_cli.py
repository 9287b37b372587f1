"""`hotserve export` end to end: exit codes, messages, flags, and no torch at parser-build time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main
from server.contract.manifest import ModelManifest


def test_export_publishes_the_latest_version_of_a_model_folder(
    transformer_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repository"

    code = main(
        [
            "export",
            str(transformer_checkpoint.parent),
            "--repository",
            str(repository),
            "--no-optimize",
            "--max-batch-size",
            "16",
            "--max-queue-delay-ms",
            "1",
            "--instances",
            "1",
        ]
    )

    assert code == 0
    version_dir = repository / "sequences" / "1"
    out = capsys.readouterr().out
    assert f"published {version_dir}" in out
    assert "parity fp32: max |onnx - torch|" in out
    manifest = ModelManifest.read(version_dir)
    assert manifest.export is not None and not manifest.export.optimized
    assert (manifest.batching.max_batch_size, manifest.batching.max_queue_delay_ms) == (16, 1.0)
    assert manifest.batching.preferred_batch_sizes == [8, 16]
    assert manifest.batching.instances == 1


def test_export_of_a_missing_checkpoint_exits_1_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "fraud"

    code = main(["export", str(missing), "--repository", str(tmp_path / "repository")])

    assert code == 1
    assert f"hotserve export: error: checkpoint {missing}: no such file" in capsys.readouterr().err


def test_export_over_an_existing_version_exits_1_and_says_it_is_never_overwritten(
    transformer_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sequences" / "1").mkdir(parents=True)

    code = main(["export", str(transformer_checkpoint), "--repository", str(tmp_path)])

    assert code == 1
    assert "already exists; a published version is never overwritten" in capsys.readouterr().err
    assert list((tmp_path / "sequences" / "1").iterdir()) == []


def test_re_export_with_other_serving_options_publishes_the_next_free_version(
    mlp_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No retraining to change batching: the checkpoint's number is taken, so the next one is used."""
    repository = tmp_path / "repository"
    first = ["export", str(mlp_checkpoint), "--repository", str(repository), "--no-optimize"]
    assert main(first) == 0
    assert main([*first, "--max-batch-size", "8"]) == 0

    assert sorted(p.name for p in (repository / "fraud").iterdir()) == ["1", "2"]
    again = ModelManifest.read(repository / "fraud" / "2")
    assert (again.version, again.batching.max_batch_size) == (2, 8)
    assert again.lineage.checkpoint == str(mlp_checkpoint.resolve())
    assert ModelManifest.read(repository / "fraud" / "1").batching.max_batch_size == 64
    out = capsys.readouterr().out
    assert f"published {repository / 'fraud' / '2'} from {mlp_checkpoint}" in out
    assert "note: checkpoint version 1 published as version 2" in out


def test_export_version_flag_names_the_version_and_never_overwrites(
    mlp_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repository"
    command = ["export", str(mlp_checkpoint), "--repository", str(repository), "--no-optimize", "--version", "7"]

    assert main(command) == 0
    assert ModelManifest.read(repository / "fraud" / "7").version == 7
    assert main(command) == 1
    assert "fraud/7 already exists; a published version is never overwritten" in capsys.readouterr().err


def test_int8_and_fp16_flags_are_mutually_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path), "--quantize", "int8", "--fp16"])
    assert exit_info.value.code == 2


def test_export_arguments_import_neither_torch_nor_onnx() -> None:
    """`hotserve` imports every subcommand module to build its parser, even to serve."""
    probe = (
        "import argparse, sys, exporters.export.cli; "
        "exporters.export.cli.add_arguments(argparse.ArgumentParser()); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'onnx', 'onnxruntime', 'onnxscript')))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_export_failing_parity_exits_3_and_publishes_nothing(
    transformer_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # int8 weights always move some output a little; a zero tolerance cannot be met.
    code = main(
        [
            "export",
            str(transformer_checkpoint),
            "--repository",
            str(tmp_path),
            "--quantize",
            "int8",
            "--reduced-tolerance",
            "0",
        ]
    )

    assert code == 3
    err = capsys.readouterr().err
    assert "REFUSED" in err and "parity check failed for the int8 model" in err
    assert list(tmp_path.iterdir()) == []

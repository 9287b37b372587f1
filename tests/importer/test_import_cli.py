"""`hotserve import` from the command line: what it prints, and its exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import main
from tests.importer.conftest import Converted


def test_import_prints_the_signature_parity_and_notes(
    sklearn_pipeline: Converted, reference_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "import",
            str(sklearn_pipeline.path),
            "--name",
            "scorer",
            "--repository",
            str(tmp_path),
            "--reference",
            str(reference_csv),
            "--label",
            "label",
            "--meta",
            "owner=risk",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"published {tmp_path / 'scorer' / '1'} from {sklearn_pipeline.path} (skl2onnx" in out
    assert "  input X: FP32 [-1, 4]" in out and "  output probabilities: FP32 [-1, 2]" in out
    assert "  parity optimised: max |onnx - source| = 0 (tolerance 0.0001, 300 rows)" in out
    assert "note: metrics on 300 reference rows (binary classification, output 'probabilities'): auc" in out


def test_refusals_exit_1_with_the_reason(
    sklearn_pipeline_zipmap: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["import", str(sklearn_pipeline_zipmap), "--name", "m", "--repository", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("hotserve import: error: pipeline_zipmap.onnx: output 'output_probability'")
    assert "options={'zipmap': False}" in err


def test_a_graph_that_strays_from_the_source_exits_3(
    mlp_classifier: Converted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "import",
            str(mlp_classifier.path),
            "--name",
            "mlp",
            "--repository",
            str(tmp_path),
            "--quantize",
            "int8",
            "--reduced-tolerance",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "REFUSED" in err and "parity check failed for the int8 model: max |onnx - source|" in err
    assert not (tmp_path / "mlp").exists()


def test_meta_must_be_key_value(sklearn_pipeline: Converted, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["import", str(sklearn_pipeline.path), "--name", "m", "--meta", "owner"])
    assert exited.value.code == 2

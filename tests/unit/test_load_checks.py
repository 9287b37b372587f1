"""The load scenarios' answer checks, the SLO gate and the recorder's windows, without a server."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from load_tests import checks
from load_tests.checks import WrongAnswer
from load_tests.recorder import Event, Recorder
from load_tests.slo import SloFile, evaluate, gate


def _v2(version: str = "2", rows: int = 2, **changes: object) -> bytes:
    doc = {
        "model_name": "fraud",
        "model_version": version,
        "id": "loadtest",
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [rows, 1], "data": [0.5] * rows}],
    }
    return json.dumps({**doc, **changes}).encode()


def test_a_v2_json_answer_names_the_version_that_answered() -> None:
    assert checks.v2_json(200, _v2("3"), "fraud", ["score"], 2, "loadtest") == "3"


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (503, b'{"error": "not ready"}', 'status 503, expected 200: {"error": "not ready"}'),
        (200, b"<html>", "body is not JSON"),
        (200, _v2(rows=1), "output score shape [1, 1], expected 2 rows"),
        (200, _v2(model_version=None), "model_version None names no version"),
        (200, _v2(model_name="other"), "model_name 'other', expected 'fraud'"),
        (200, _v2(id="x"), "id 'x', expected 'loadtest'"),
        (200, _v2(outputs=[{"name": "score", "shape": [2, 1], "data": [0.5]}]), "1 values for shape [2, 1]"),
        (200, _v2(outputs=[]), "expected ['score']"),
    ],
)
def test_a_wrong_v2_json_answer_is_a_failure_saying_what_was_wrong(status: int, body: bytes, message: str) -> None:
    with pytest.raises(WrongAnswer, match=re.escape(message)):
        checks.v2_json(status, body, "fraud", ["score"], 2, "loadtest")


def _binary(
    values: list[float], declared: int | None = None, header_length: int | None = None
) -> tuple[dict[str, str], bytes]:
    raw = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps(
        {
            "model_name": "fraud",
            "model_version": "1",
            "outputs": [
                {
                    "name": "score",
                    "datatype": "FP32",
                    "shape": [len(values), 1],
                    "parameters": {"binary_data_size": len(raw) if declared is None else declared},
                }
            ],
        }
    ).encode()
    return {
        "inference-header-content-length": str(len(header) if header_length is None else header_length)
    }, header + raw


def test_a_v2_binary_answer_carries_every_output_as_the_bytes_its_shape_needs() -> None:
    headers, body = _binary([0.1, 0.9])
    assert checks.v2_binary(200, headers, body, "fraud", ["score"], 2) == "1"
    headers, body = _binary([0.1, 0.9], declared=4)
    with pytest.raises(WrongAnswer, match="4 bytes for FP32 \\[2, 1\\]"):
        checks.v2_binary(200, headers, body, "fraud", ["score"], 2)
    headers, body = _binary([0.1, 0.9])
    with pytest.raises(WrongAnswer, match="declare 8 bytes, the body carries 4"):
        checks.v2_binary(200, headers, body[:-4], "fraud", ["score"], 2)
    with pytest.raises(WrongAnswer, match="Inference-Header-Content-Length None"):
        checks.v2_binary(200, {}, body, "fraud", ["score"], 2)


def test_v1_answers_need_one_prediction_per_record_and_unknown_entities_a_404_naming_them() -> None:
    body = json.dumps({"predictions": [0.1, 0.2], "model_name": "fraud", "model_version": "2"}).encode()
    assert checks.v1_predictions(200, body, "fraud", 2) == "2"
    with pytest.raises(WrongAnswer, match="2 predictions for 3 records"):
        checks.v1_predictions(200, body, "fraud", 3)
    error = b'{"error": "entity \'unknown-3\' not found in feature view fraud:v1: no values stored"}'
    assert checks.v1_unknown_entity(404, error, "unknown-3") is None
    with pytest.raises(WrongAnswer, match="does not name entity 'unknown-4'"):
        checks.v1_unknown_entity(404, error, "unknown-4")
    with pytest.raises(WrongAnswer, match="status 200, expected 404"):
        checks.v1_unknown_entity(200, body, "unknown-3")


def _recorded() -> Recorder:
    """100 requests over 10 s (the one at 5.0 s failing), v1 answering until 5 s, v2 after; a promote at 5 s."""
    recorder = Recorder()
    for i in range(100):
        t = 1000.0 + i * 0.1
        recorder.on_request(
            "POST",
            "v2_json",
            float(i % 10),
            10,
            exception=RuntimeError("boom") if i == 50 else None,
            context={"version": "1" if t < 1005.0 else "2"},
            start_time=t,
        )
    recorder.on_request("POST", "admin promote", 12.0, 10, context={}, start_time=1005.0)
    recorder.record_event(Event("promote", 1005.0, 1005.02, True))
    recorder.record_event(Event("shadow", 1003.0, 1003.01, True))
    return recorder


def test_the_recorder_counts_failures_inside_the_windows_where_production_changed_hands() -> None:
    recorder = _recorded()
    windows = recorder.routing_windows(after_s=0.5)
    assert [(e.action, start, end) for e, start, end in windows] == [("promote", 1005.0, 1005.52)]
    assert recorder.failures_in(["v2_json"], windows) == (6, 1)  # 5.0, 5.1, ..., 5.5 s
    assert recorder.failures_in(["v2_json"], recorder.routing_windows(after_s=0.0)) == (1, 1)  # the call itself


def test_the_recorder_series_gives_rate_percentiles_and_version_shares_per_second() -> None:
    series = _recorded().series(["v2_json"])
    assert len(series.t_s) == 10 and series.requests_per_s == [10.0] * 10
    assert series.failures_per_s[5] == 1.0 and sum(series.failures_per_s) == 1.0
    assert series.percentiles_ms["p50"][0] == pytest.approx(float(np.percentile(range(10), 50)))
    assert series.version_share["1"][:5] == [1.0] * 5 and series.version_share["2"][5:] == [1.0] * 5


def _summary(p99: float = 8.0, failures: int = 0, windows: int = 1, in_windows: int = 0) -> dict[str, object]:
    return {
        "scenarios": {"v2_json": {"p99_ms": p99}},
        "total": {
            "requests": 1000,
            "failures": failures,
            "error_ratio": failures / 1000,
            "prediction_requests_per_s": 250.0,
        },
        "promotions": {"windows": [{"action": "promote"}] * windows, "requests": 300, "failures": in_windows},
    }


def test_the_slo_gate_names_each_failed_target_with_the_measured_value(capsys: pytest.CaptureFixture[str]) -> None:
    slo = SloFile(
        p99_ms={"v2_json": 5, "v1_features": 10},
        max_error_ratio=0.001,
        min_throughput_rps=300,
        zero_failures_during_promotions=True,
    )
    verdicts = evaluate(slo, _summary(failures=2, in_windows=1))
    assert [(v.slo, v.passed) for v in verdicts] == [
        ("p99 v2_json", False),
        ("p99 v1_features", False),
        ("error ratio", False),
        ("throughput", False),
        ("zero failures during promotions", False),
    ]
    assert gate(verdicts) == 1
    out = capsys.readouterr().out
    assert "FAIL p99 v2_json: measured 8 ms, target <= 5 ms" in out
    assert "FAIL p99 v1_features: measured no requests, target <= 10 ms" in out
    assert "FAIL error ratio: measured 0.002 (2 of 1000 requests), target <= 0.001" in out
    assert "FAIL throughput: measured 250.0 req/s, target >= 300 req/s" in out
    assert "measured 1 failed of 300 requests in 1 production changes" in out
    assert "SLO gate: 5 of 5 failed" in out


def test_the_slo_gate_passes_targets_the_run_met_and_refuses_a_promotion_slo_without_promotions() -> None:
    slo = SloFile(p99_ms={"v2_json": 10}, max_error_ratio=0.0, min_throughput_rps=200)
    assert all(v.passed for v in evaluate(slo, _summary())) and gate(evaluate(slo, _summary())) == 0
    promotions = SloFile(zero_failures_during_promotions=True)
    (verdict,) = evaluate(promotions, _summary(windows=0))
    assert not verdict.passed and verdict.measured == "no production change happened during the run"


def test_an_slo_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text("p99_ms: {v2_json: 10}\nmax_errors: 0\n")
    with pytest.raises(ValueError, match="max_errors"):
        SloFile.read(path)

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
from load_tests.slo import SloFile, SloFileError, evaluate, gate


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


def _run_settings(**overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "duration_s": 15.0,
        "users": 8,
        "rate_per_user": 25.0,
        "operator": True,
        "operator_interval_s": 5.0,
    }
    return {**settings, **overrides}


def test_a_throughput_floor_set_for_a_bigger_run_is_scaled_to_what_this_run_offers() -> None:
    slo = SloFile(min_throughput_rps=700, offered_rps=775)
    (verdict,) = evaluate(slo, {**_summary(), "settings": _run_settings()})  # 7 users x 25 = 175 offered
    assert verdict.passed and verdict.target == ">= 158.1 req/s"
    assert verdict.note == (
        "700 req/s scaled to this run: it offers 175 req/s (7 prediction users x 25 req/s), the floor was set for 775"
    )
    (full,) = evaluate(slo, {**_summary(), "settings": _run_settings(users=32)})  # offers 775: as written
    assert full.target == ">= 700 req/s" and full.note is None and not full.passed


def test_a_throughput_floor_out_of_the_runs_reach_fails_saying_so_when_the_file_gives_no_offered_rate() -> None:
    (verdict,) = evaluate(SloFile(min_throughput_rps=700), {**_summary(), "settings": _run_settings()})
    assert not verdict.passed
    assert str(verdict) == (
        "FAIL throughput: measured 250.0 req/s, target >= 700 req/s (unreachable with this run's settings: it "
        "offers at most 175 req/s (7 prediction users x 25 req/s); raise --users or --rate-per-user, or lower "
        "min_throughput_rps)"
    )
    unpaced = {**_summary(), "settings": _run_settings(rate_per_user=0)}  # no pacing: no ceiling to know
    assert evaluate(SloFile(min_throughput_rps=700), unpaced)[0].note is None


def test_the_promotion_slo_is_skipped_saying_why_when_the_run_could_not_promote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    slo = SloFile(zero_failures_during_promotions=True, p99_ms={"v2_json": 10})
    short = evaluate(slo, {**_summary(windows=0), "settings": _run_settings()})
    assert short[1].skipped and short[1].passed
    assert short[1].note == (
        "skipped: the operator's first promotion comes after 4 x 5 s (--operator-interval), after this 15 s run "
        "ended; run longer than 20 s or shorten the interval"
    )
    assert gate(short) == 0
    out = capsys.readouterr().out
    assert "SKIP zero failures during promotions: measured no production change happened" in out
    assert "SLO gate: 1 of 2 passed, 1 skipped (out of this run's reach)" in out
    (alone,) = evaluate(
        SloFile(zero_failures_during_promotions=True),
        {**_summary(windows=0), "settings": _run_settings(operator=False)},
    )
    assert alone.skipped and alone.note == "skipped: the run had no operator (--no-operator)"
    (refused,) = evaluate(
        SloFile(zero_failures_during_promotions=True),
        {**_summary(windows=0), "settings": _run_settings(duration_s=60.0)},
    )
    assert not refused.passed and not refused.skipped  # long enough: a missing promotion is a failure


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (None, "cannot read it (No such file or directory)"),
        ("p99_ms: {v2_json: 10\n", "not YAML at line 2"),
        ("- 1\n- 2\n", "expected a mapping of targets, got list"),
        ("min_throughput_rps: -5\n", "min_throughput_rps: Input should be greater than 0"),
    ],
)
def test_an_unusable_slo_file_is_one_line_naming_the_file_and_the_problem(
    tmp_path: Path, text: str | None, says: str
) -> None:
    path = tmp_path / "slo.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SloFileError) as raised:
        SloFile.read(path)
    assert str(raised.value).startswith(f"SLO file {path}: ") and says in str(raised.value)
    assert "\n" not in str(raised.value)


def test_check_defaults_the_slo_file_to_the_models_and_exits_3_on_an_unusable_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from load_tests.__main__ import main

    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({**_summary(), "target": {"model": "fraud"}, "settings": _run_settings()}))
    assert main(["check", str(summary)]) == 1  # load_tests/slo/fraud.yaml: p99 targets of scenarios not run
    out = capsys.readouterr().out
    assert "slo/fraud.yaml" in out and "PASS throughput: measured 250.0 req/s, target >= 158.1 req/s" in out
    assert main(["check", str(summary), "--slo", str(tmp_path / "missing.yaml")]) == 3
    assert "cannot read it" in capsys.readouterr().err
    summary.write_text(json.dumps({**_summary(), "target": {"model": "nomodel"}}))
    assert main(["check", str(summary)]) == 3
    assert "no SLO file for model 'nomodel'" in capsys.readouterr().err


def test_the_operator_refuses_a_model_whose_canary_split_or_shadow_it_would_remove() -> None:
    from load_tests.found_state import FoundState

    clean = FoundState("fraud", 2, {"production": 2}, {}, None)
    assert clean.in_the_way() is None
    unnamed = FoundState("fraud", None, {}, {}, None)
    assert unnamed.in_the_way() == (
        "model 'fraud' has no production alias (it serves its newest version): the operator's promote and "
        "rollback would leave one. Name it first (hotserve models promote fraud VERSION), or run with --no-operator"
    )
    busy = FoundState(
        "fraud",
        2,
        {"production": 2, "canary": 3},
        {"canary": 10, "production": 90},
        {"version": 4, "share": 0.2},
    )
    assert busy.in_the_way() == (
        "model 'fraud' already has alias canary -> v3 and a traffic split (canary=10, production=90) and a shadow "
        "(v4): the operator would overwrite and then remove them. Run with --no-operator, or clear them first "
        "(hotserve models unalias fraud canary; hotserve models traffic fraud --clear; hotserve models shadow "
        "fraud --off)"
    )

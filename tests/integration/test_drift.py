"""Drift of a real server's versions: stable on the training distribution, a shifted feature over 0.2,
and every number equal to an independent computation on the same rows and bins."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraud_scorer import (
    COLUMNS,
    drift_report,
    fraud_rows,
    independent_psi,
    score_stream,
    shifted,
    write_fraud_repository,
)
from load_tests.server_process import ServerProcess
from server.contract.manifest import ReferenceHistogram

pytestmark = pytest.mark.integration

STREAM_ROWS = 8_000
DRIFT_ENV = {
    "HOTSERVE_DRIFT_INTERVAL_S": "0.2",
    "HOTSERVE_DRIFT_WINDOW_ROWS": "10000",
    "HOTSERVE_DRIFT_MIN_ROWS": "1000",
}


@dataclass
class Stream:
    version: int
    rows: np.ndarray
    scores: np.ndarray
    report: dict[str, Any]


@pytest.fixture(scope="module")
def drift_server(serve_with: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return serve_with(write_fraud_repository(tmp_path_factory.mktemp("drift_repository")), DRIFT_ENV)


@pytest.fixture(scope="module")
def streams(drift_server: ServerProcess) -> Iterator[dict[str, Stream]]:
    """Training-distribution rows (seed 1) to version 1 through v1 and v2; the same generator (seed 2)
    with `amount` tripled to version 2."""
    stable_rows = fraud_rows(seed=1, rows=STREAM_ROWS)
    shifted_rows = shifted(fraud_rows(seed=2, rows=STREAM_ROWS), "amount", 3.0)
    with httpx.Client(base_url=drift_server.base_url, timeout=30) as client:
        stable_scores = score_stream(client, "fraud", None, stable_rows)  # production = version 1
        shifted_scores = score_stream(client, "fraud", 2, shifted_rows)
    yield {
        "stable": Stream(1, stable_rows, stable_scores, drift_report(drift_server.base_url, "fraud", 1, STREAM_ROWS)),
        "shifted": Stream(
            2, shifted_rows, shifted_scores, drift_report(drift_server.base_url, "fraud", 2, STREAM_ROWS)
        ),
    }


def test_training_distribution_stays_stable_and_one_shifted_feature_crosses_the_act_threshold(
    streams: dict[str, Stream],
) -> None:
    stable = {f["name"]: f for f in streams["stable"].report["features"]}
    assert list(stable) == COLUMNS
    assert all(f["psi"] < 0.1 and f["status"] == "stable" for f in stable.values()), stable
    drifted = {f["name"]: f for f in streams["shifted"].report["features"]}
    assert drifted["amount"]["psi"] > 0.2 and drifted["amount"]["status"] == "act"
    others = {name: f["psi"] for name, f in drifted.items() if name != "amount"}
    assert max(others.values()) < 0.1, others
    # Tripled amounts raise the scores: the prediction drifts too, on the training distribution it does not.
    assert streams["stable"].report["prediction"]["psi"] < 0.1
    assert streams["shifted"].report["prediction"]["psi"] > 0.2


def test_every_psi_equals_an_independent_computation_on_the_same_rows_and_bins(streams: dict[str, Stream]) -> None:
    for stream in streams.values():
        report = stream.report
        assert report["window"] == {
            "rows": STREAM_ROWS,
            "max_rows": 10_000,
            "max_age_s": None,
            "min_rows": 1_000,
            "sampled_rows_total": STREAM_ROWS,
        }
        for column, feature in enumerate(report["features"]):
            reference = ReferenceHistogram.model_validate(feature["reference"])
            # The server saw FP32 tensors: the same values, widened.
            expected, nan = independent_psi(stream.rows[:, column].astype(np.float64), reference)
            assert feature["psi"] == pytest.approx(expected, rel=1e-9, abs=1e-12), feature["name"]
            assert (feature["values"], feature["nan"]) == (STREAM_ROWS, nan)
            assert feature["kind"] == ("categorical" if reference.categories else "numeric")
        prediction = report["prediction"]
        assert prediction["name"] == "score"
        expected, _ = independent_psi(stream.scores, ReferenceHistogram.model_validate(prediction["reference"]))
        assert prediction["psi"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_categorical_feature_is_compared_per_category(streams: dict[str, Stream]) -> None:
    feature = next(f for f in streams["stable"].report["features"] if f["name"] == "merchant_category")
    assert feature["reference"]["categories"] == [float(c) for c in range(12)]
    live = np.asarray(feature["live_proportions"])
    column = streams["stable"].rows[:, COLUMNS.index("merchant_category")]
    expected_live = [np.mean(column == c) for c in range(12)] + [0.0]  # no unseen category: "other" empty
    np.testing.assert_allclose(live, expected_live)
    assert len(feature["expected_proportions"]) == 13


def test_metrics_carry_the_same_numbers_per_version(drift_server: ServerProcess, streams: dict[str, Stream]) -> None:
    text = httpx.get(f"{drift_server.base_url}/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for stream in streams.values():
        labels = {"model": "fraud", "version": str(stream.version)}
        assert samples[("hotserve_drift_window_rows", tuple(sorted(labels.items())))] >= STREAM_ROWS
        for feature in stream.report["features"]:
            key = ("hotserve_drift_feature_psi", tuple(sorted({**labels, "feature": feature["name"]}.items())))
            assert samples[key] == pytest.approx(feature["psi"], rel=1e-9)
        key = ("hotserve_drift_prediction_psi", tuple(sorted({**labels, "output": "score"}.items())))
        assert samples[key] == pytest.approx(stream.report["prediction"]["psi"], rel=1e-9)


def test_drift_route_answers_for_the_serving_version_and_refuses_unknown_ones(
    drift_server: ServerProcess, streams: dict[str, Stream]
) -> None:
    serving = httpx.get(f"{drift_server.base_url}/v2/models/fraud/drift").json()
    assert (serving["version"], serving["monitored"]) == ("1", True)
    assert serving["method"]["thresholds"] == {"watch": 0.1, "act": 0.2}
    missing = httpx.get(f"{drift_server.base_url}/v2/models/fraud/versions/7/drift")
    assert missing.status_code == 404 and "error" in missing.json()
    assert httpx.get(f"{drift_server.base_url}/v2/models/nope/drift").status_code == 404

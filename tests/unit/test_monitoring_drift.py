"""Drift monitoring: reference binning, the PSI formula, the sample window, publication rules, the exporter."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from server.batching.batcher import Batcher
from server.contract.manifest import (
    DriftReference,
    FeatureSpec,
    ModelManifest,
    ReferenceHistogram,
)
from server.metrics.instruments import Metrics
from server.monitoring.drift import DriftConfig, VersionDrift, plan_drift
from server.monitoring.monitor import DriftMonitor
from server.monitoring.psi import EPSILON, ReferenceBins, psi, status_of
from server.monitoring.window import SampleWindow
from server.registry.control_state import ControlSnapshot, ModelControl
from server.registry.control_store import open_control_state
from server.registry.registry import ModelRegistry
from server.request import Tensors
from server.runtime.executor import RuntimeExecutor
from server.settings import Settings
from tests.fakes import (
    FailingRuntime,
    FakeRegistry,
    FakeServedVersion,
    SlowRuntime,
    make_manifest,
    request,
    serving,
    write_model_version,
)

HANG_GUARD_S = 20.0
NUMERIC = ReferenceHistogram(name="x", bin_edges=[0.0, 1.0, 2.0, 3.0], proportions=[0.2, 0.5, 0.3])
CATEGORY = ReferenceHistogram(
    name="c", bin_edges=[-0.5, 0.5, 1.5, 4.0], proportions=[0.5, 0.3, 0.1], categories=[0.0, 1.0, 3.0]
)


def tabular_manifest(
    columns: list[str],
    references: list[ReferenceHistogram],
    version: int = 1,
    prediction: ReferenceHistogram | None = None,
) -> ModelManifest:
    """`x` FP32 [-1, len(columns)] -> `y` FP32 [-1, 2], with a feature spec and the given references."""
    return make_manifest(
        "tab",
        [("x", "FP32", [-1, len(columns)])],
        [("y", "FP32", [-1, 2])],
        version=version,
        features=FeatureSpec(input="x", columns=columns, request_features=columns),
    ).model_copy(
        update={
            "drift": DriftReference(
                features=references, prediction=prediction, prediction_output="y" if prediction else None
            )
        }
    )


# --- binning and the index ------------------------------------------------------------------


def test_values_outside_the_reference_edges_count_in_the_outer_bins() -> None:
    binned = ReferenceBins(NUMERIC).bin(np.array([-50.0, 0.0, 0.99, 1.0, 2.5, 3.0, 1e9, np.inf, -np.inf]))
    # As np.histogram over values clipped to [0, 3]: bins [0, 1), [1, 2), [2, 3].
    assert binned.counts.tolist() == [4, 1, 4]
    assert binned.nan == 0


def test_nan_is_counted_apart_from_every_bin() -> None:
    binned = ReferenceBins(NUMERIC).bin(np.array([np.nan, 0.5, np.nan, 2.5]))
    assert (binned.counts.tolist(), binned.nan) == ([1, 0, 1], 2)


def test_categories_count_one_bin_each_and_unknown_values_land_in_other() -> None:
    bins = ReferenceBins(CATEGORY)
    binned = bins.bin(np.array([0.0, 0.0, 1.0, 3.0, 2.0, 7.0, -1.0, 0.5, np.nan]))
    assert binned.counts.tolist() == [2, 1, 1, 4]  # 2.0, 7.0, -1.0 and 0.5 are no training category
    assert binned.nan == 1
    np.testing.assert_allclose(bins.expected, [0.5, 0.3, 0.1, 0.1])  # "other": 1 - sum


def test_psi_follows_the_formula_with_epsilon_for_empty_bins() -> None:
    counts = np.array([30, 50, 20, 0])
    expected = np.array([0.2, 0.5, 0.3, 0.0])
    live = [0.3, 0.5, 0.2, EPSILON]
    ref = [0.2, 0.5, 0.3, EPSILON]
    by_hand = sum((a - e) * math.log(a / e) for a, e in zip(live, ref, strict=True))
    assert psi(counts, expected) == pytest.approx(by_hand)
    assert psi(np.array([20, 50, 30]), np.array([0.2, 0.5, 0.3])) == pytest.approx(0.0, abs=1e-15)
    # A bin the reference never saw stays finite: (0.5 - 1e-4) * ln(0.5 / 1e-4) + ...
    assert math.isfinite(psi(np.array([5, 0, 5]), np.array([0.0, 1.0, 0.0])))


def test_status_thresholds_are_watch_above_0_1_and_act_above_0_2() -> None:
    assert [status_of(v) for v in (0.0, 0.1, 0.15, 0.2, 0.21)] == ["stable", "stable", "watch", "watch", "act"]


# --- the sample window ----------------------------------------------------------------------


def test_window_keeps_the_most_recent_rows_in_order_across_the_wraparound() -> None:
    window = SampleWindow(capacity=5, width=2)
    for start in (0, 3, 6):
        rows = np.arange(start, start + 3, dtype=np.float32)
        window.append([rows[:, None], -rows[:, None]], now=float(start))
    snapshot = window.snapshot()
    assert snapshot[:, 0].tolist() == [4, 5, 6, 7, 8]
    assert snapshot[:, 1].tolist() == [-4, -5, -6, -7, -8]
    assert window.appended == 9


def test_batch_larger_than_the_window_keeps_its_last_rows() -> None:
    window = SampleWindow(capacity=4, width=1)
    window.append([np.array([[1.0]])], now=0.0)
    window.append([np.arange(10, dtype=np.float64)[:, None]], now=1.0)
    assert window.snapshot()[:, 0].tolist() == [6, 7, 8, 9]


def test_time_window_leaves_out_rows_older_than_its_age() -> None:
    window = SampleWindow(capacity=10, width=1)
    window.append([np.zeros((3, 1))], now=100.0)
    window.append([np.ones((2, 1))], now=200.0)
    assert window.snapshot(since=150.0)[:, 0].tolist() == [1, 1]
    assert len(window.snapshot()) == 5


# --- one version: what is monitored, when PSI is published ------------------------------------


def test_features_are_taken_by_name_from_the_feature_tensor_and_the_prediction_pooled() -> None:
    manifest = tabular_manifest(
        ["a", "x", "c"],
        [CATEGORY, NUMERIC],
        prediction=ReferenceHistogram(name="y", bin_edges=[0, 0.5, 1], proportions=[0.5, 0.5]),
    )
    drift = VersionDrift(manifest, plan_drift(manifest), DriftConfig(min_rows=1))
    inputs = {"x": np.array([[9.0, 0.5, 3.0], [9.0, 2.5, 5.0]], dtype=np.float32)}
    drift.record(inputs, {"y": np.array([[0.1, 0.9], [0.2, 0.3]], dtype=np.float32)})
    report = drift.compute()
    assert [f.name for f in report.features] == ["c", "x"]  # the references' order, column "a" unused
    assert report.features[0].live_proportions == (0.0, 0.0, 0.5, 0.5)  # 3.0 known, 5.0 other
    assert report.features[1].live_proportions == (0.5, 0.0, 0.5)
    assert report.prediction is not None and report.prediction.values == 4  # two values per row
    assert report.prediction.live_proportions == pytest.approx((0.75, 0.25))


def test_no_psi_is_published_below_the_minimum_rows() -> None:
    manifest = tabular_manifest(["x"], [NUMERIC])
    drift = VersionDrift(manifest, plan_drift(manifest), DriftConfig(min_rows=10))
    drift.record({"x": np.full((9, 1), 0.5, dtype=np.float32)}, {"y": np.zeros((9, 2), np.float32)})
    assert drift.compute().features[0].psi is None
    assert drift.latest.window_rows == 9
    drift.record({"x": np.full((1, 1), 0.5, dtype=np.float32)}, {"y": np.zeros((1, 2), np.float32)})
    assert drift.compute().features[0].psi == pytest.approx(psi(np.array([10, 0, 0]), np.array([0.2, 0.5, 0.3])))


def test_versions_without_a_reference_or_with_drift_off_are_not_tracked() -> None:
    manifest = tabular_manifest(["x"], [NUMERIC])
    assert DriftMonitor(DriftConfig(enabled=False)).track(manifest) is None
    bare = make_manifest("bare", [("x", "FP32", [-1, 1])], [("y", "FP32", [-1, 1])])
    assert DriftMonitor().track(bare) is None
    assert plan_drift(bare).skipped == ["model.json has no drift reference: nothing monitored"]
    strings = make_manifest("s", [("x", "FP32", [-1, 1])], [("y", "BYTES", [-1])]).model_copy(
        update={"drift": DriftReference(prediction=NUMERIC, prediction_output="y")}
    )
    assert DriftMonitor().track(strings) is None
    assert "prediction not monitored" in plan_drift(strings).skipped[0]


def test_text_labels_are_monitored_as_the_class_mix_of_the_per_class_scores() -> None:
    classes = ReferenceHistogram(
        name="label",
        bin_edges=[-0.5, 0.5, 1.5, 2.5],
        proportions=[0.5, 0.3, 0.2],
        categories=["basic", "premium", "gold"],
    )
    manifest = make_manifest(
        "seg", [("x", "FP32", [-1, 1])], [("probabilities", "FP32", [-1, 3]), ("label", "BYTES", [-1])]
    ).model_copy(update={"drift": DriftReference(prediction=classes, prediction_output="label")})
    plan = plan_drift(manifest)
    assert plan.skipped == [] and plan.prediction_output == "probabilities" and plan.prediction_classes
    drift = VersionDrift(manifest, plan, DriftConfig(min_rows=4))
    scores = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], dtype=np.float32)
    labels = np.array([b"gold", b"basic", b"premium", b"gold"], dtype=object)
    drift.record({"x": np.zeros((4, 1), np.float32)}, {"probabilities": scores, "label": labels})
    report = drift.compute()
    assert report.prediction is not None and report.prediction.name == "label"
    assert report.prediction.kind == "categorical" and report.prediction.values == 4
    assert report.prediction.live_proportions == (0.25, 0.25, 0.5, 0.0)  # basic, premium, gold, other
    assert report.prediction.psi == pytest.approx(psi(np.array([1, 1, 2, 0]), np.array([0.5, 0.3, 0.2, 0.0])))
    assert report.prediction.reference.categories == ["basic", "premium", "gold"]
    # Without an output of one score per class there is nothing to count the classes from.
    bare = make_manifest("seg", [("x", "FP32", [-1, 1])], [("label", "BYTES", [-1])]).model_copy(
        update={"drift": DriftReference(prediction=classes, prediction_output="label")}
    )
    assert "no output holds one score per class" in plan_drift(bare).skipped[0]


# --- export ---------------------------------------------------------------------------------


def test_scrape_exports_the_latest_numbers_and_forgets_untracked_versions() -> None:
    metrics = Metrics(drift=DriftMonitor(DriftConfig(min_rows=2)))
    drift = metrics.drift.track(tabular_manifest(["x"], [NUMERIC], version=3))
    assert drift is not None
    drift.record({"x": np.array([[0.5], [1.5], [np.nan]], dtype=np.float32)}, {"y": np.zeros((3, 2), np.float32)})
    before = generate_latest(metrics.registry).decode()
    assert 'hotserve_drift_window_rows{model="tab",version="3"} 0.0' in before  # not computed yet
    assert "hotserve_drift_feature_psi{" not in before
    metrics.drift.compute_all()
    text = generate_latest(metrics.registry).decode()
    assert 'hotserve_drift_window_rows{model="tab",version="3"} 3.0' in text
    assert 'hotserve_drift_window_nan_values{feature="x",model="tab",version="3"} 1.0' in text
    assert 'hotserve_drift_sampled_rows_total{model="tab",version="3"} 3.0' in text
    value = psi(np.array([1, 1, 0]), np.array([0.2, 0.5, 0.3]))
    assert f'hotserve_drift_feature_psi{{feature="x",model="tab",version="3"}} {value!r}' in text
    metrics.drift.untrack(drift)
    assert 'version="3"' not in generate_latest(metrics.registry).decode()


async def test_batcher_hands_each_clean_batch_to_its_observer_once() -> None:
    seen: list[tuple[Tensors, Tensors]] = []
    runtime = SlowRuntime()
    executor = RuntimeExecutor(runtime, 1, "test-observer")
    batcher = Batcher(
        make_manifest("echo", [("x", "FP32", [-1, 3])], [("y", "FP32", [-1, 3])]),
        executor,
        Metrics(),
        on_batch=lambda i, o: seen.append((i, o)),
    )
    try:
        first = asyncio.ensure_future(batcher.submit(request({"x": np.zeros((1, 3), np.float32)})))
        while not batcher.running:
            await asyncio.sleep(0)
        queued = [
            asyncio.ensure_future(batcher.submit(request({"x": np.full((2, 3), v, np.float32)}))) for v in (1.0, 2.0)
        ]
        await asyncio.sleep(0)
        runtime.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *queued), HANG_GUARD_S)
    finally:
        executor.shutdown(wait=True)
    assert [len(i["x"]) for i, _ in seen] == [1, 4]  # the two queued requests ran as one batch
    np.testing.assert_array_equal(seen[1][0]["x"], seen[1][1]["y"])


async def test_failed_batches_are_not_observed() -> None:
    seen: list[Tensors] = []
    executor = RuntimeExecutor(FailingRuntime(), 1, "test-observer")
    batcher = Batcher(
        make_manifest("echo", [("x", "FP32", [-1, 3])], [("y", "FP32", [-1, 3])]),
        executor,
        Metrics(),
        on_batch=lambda i, o: seen.append(i),
    )
    try:
        with pytest.raises(Exception, match="injected runtime failure"):
            await asyncio.wait_for(batcher.submit(request({"x": np.zeros((1, 3), np.float32)})), HANG_GUARD_S)
    finally:
        executor.shutdown(wait=True)
    assert seen == []


async def test_unloading_a_version_removes_its_drift_series(tmp_path: Path) -> None:
    prediction = DriftReference(
        prediction=ReferenceHistogram(name="y", bin_edges=[0.0, 0.5, 1.0], proportions=[0.5, 0.5]),
        prediction_output="y",
    )
    for version in (1, 2):
        write_model_version(tmp_path, "mlp", version, drift=prediction)
    settings = Settings(model_repository=tmp_path, execution_providers="CPUExecutionProvider", intra_op_threads=1)
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics, open_control_state(settings, metrics))
    await registry.control.write(
        ControlSnapshot(models={"mlp": ModelControl(aliases={"production": 1, "canary": 2})}), expected_revision=0
    )
    await registry.start()
    try:
        text = generate_latest(metrics.registry).decode()
        assert 'hotserve_drift_window_rows{model="mlp",version="1"}' in text
        assert 'hotserve_drift_window_rows{model="mlp",version="2"}' in text
        await registry.apply(ControlSnapshot(revision=2, models={"mlp": ModelControl(aliases={"production": 1})}))
        drift_lines = [
            line
            for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith("hotserve_drift")
        ]
        assert 'hotserve_drift_window_rows{model="mlp",version="1"} 0.0' in drift_lines
        assert not [line for line in drift_lines if 'version="2"' in line]
    finally:
        await registry.close(5.0)


async def test_drift_route_says_why_a_version_is_not_monitored(settings: Settings) -> None:
    bare = make_manifest("bare", [("x", "FP32", [-1, 1])], [("y", "FP32", [-1, 1])], version=2)
    registry = FakeRegistry([FakeServedVersion(bare, lambda inputs: {"y": inputs["x"]})])
    async with serving(settings, registry) as client:
        response = await client.get("/v2/models/bare/drift")
        assert response.status_code == 200
        assert response.json() == {
            "name": "bare",
            "version": "2",
            "monitored": False,
            "reason": "model.json has no drift reference: nothing monitored",
        }
        assert (await client.get("/v2/models/bare/versions/9/drift")).status_code == 404
        assert (await client.get("/v2/models/bare/versions/x/drift")).status_code == 400

"""The evidence recorder: per load, in time buckets, mergeable across replicas, JSON round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from server.contract.manifest import DriftReference, ModelManifest, ReferenceHistogram
from server.evidence.load import LoadEvidence
from server.evidence.predictions import SMALL_BATCH_VALUES, PredictionBins
from server.evidence.recorder import MemoryEvidenceRecorder
from server.evidence.summary import LATENCY_BOUNDS_S, LatencyHistogram, WindowSummary
from server.evidence.windows import EvidenceWindows
from server.metrics.instruments import Metrics
from server.monitoring.psi import ReferenceBins
from server.registry.served import ServedVersion
from tests.fakes import EchoRuntime, ManualClock, fake_manifest, request

NUMERIC = ReferenceHistogram(name="y", bin_edges=[0.0, 0.25, 0.5, 0.75, 1.0], proportions=[0.25] * 4)
CATEGORICAL = ReferenceHistogram(
    name="label", bin_edges=[-0.5, 0.5, 1.5, 2.5], proportions=[0.5, 0.3, 0.1], categories=[0, 1, 2]
)


def recorder_at(clock: ManualClock, bucket_s: float = 10.0, buckets: int = 6) -> MemoryEvidenceRecorder:
    return MemoryEvidenceRecorder(EvidenceWindows(bucket_s, buckets), clock=clock)


def answer(load: LoadEvidence, status: int, latency_s: float, times: int) -> None:
    for _ in range(times):
        load.answered(status, latency_s)


def with_prediction(manifest: ModelManifest, reference: ReferenceHistogram = NUMERIC) -> ModelManifest:
    return manifest.model_copy(update={"drift": DriftReference(prediction=reference, prediction_output="y")})


async def test_a_version_loaded_again_starts_from_zero_evidence() -> None:
    clock = ManualClock()
    recorder = recorder_at(clock)
    first = recorder.open_load(fake_manifest("m", 2))
    answer(first, 200, 0.002, 7)
    answer(first, 503, 0.002, 3)
    first.compared(agreed=True, difference=0.0)
    before = await recorder.summary("m", 2)
    assert (before.requests, before.errors, before.comparisons.compared) == (10, 3, 1)

    again = recorder.open_load(fake_manifest("m", 2))  # unloaded, then loaded again in the same bucket
    after = await recorder.summary("m", 2)
    assert (after.requests, after.errors, after.comparisons.compared) == (0, 0, 0)
    assert after.loads == (again.load_id,) != before.loads
    first.answered(200, 0.002)  # the old load still draining: its answers are not the new load's
    answer(again, 200, 0.002, 2)
    assert (await recorder.summary("m", 2)).requests == 2


async def test_a_window_sums_the_whole_buckets_it_touches() -> None:
    clock = ManualClock(1000.0)
    recorder = recorder_at(clock)
    load = recorder.open_load(fake_manifest("m", 1))
    answer(load, 200, 0.001, 1)  # bucket [1000, 1010)
    clock.now = 1015.0
    answer(load, 200, 0.001, 2)  # [1010, 1020)
    clock.now = 1031.0
    answer(load, 500, 0.001, 4)  # [1030, 1040)

    everything = await recorder.summary("m", 1)
    assert (everything.requests, everything.errors) == (7, 4)
    middle = await recorder.summary("m", 1, since=1012.0, until=1019.0)
    assert (middle.since, middle.until, middle.requests) == (1010.0, 1020.0, 2)
    later = await recorder.summary("m", 1, since=1011.0)
    assert (later.since, later.until, later.requests) == (1010.0, 1040.0, 6)
    nothing = await recorder.summary("m", 1, since=1020.0, until=1030.0)
    assert nothing.requests == 0 and nothing.since == 1020.0
    assert (await recorder.summary("m", 9)).requests == 0  # never loaded: an empty summary


async def test_buckets_older_than_the_kept_window_are_dropped() -> None:
    clock = ManualClock(1000.0)
    recorder = recorder_at(clock, bucket_s=10.0, buckets=3)
    load = recorder.open_load(fake_manifest("m", 1))
    for step in range(5):  # one answer in each of five buckets
        clock.now = 1000.0 + 10 * step
        answer(load, 200, 0.001, 1)
    kept = await recorder.summary("m", 1)
    assert (kept.since, kept.until, kept.requests) == (1020.0, 1050.0, 3)
    assert (await recorder.summary("m", 1, since=0.0)).requests == 3


async def test_a_comparison_measures_candidate_and_baseline_over_the_same_window() -> None:
    clock = ManualClock(1000.0)
    recorder = recorder_at(clock, bucket_s=10.0, buckets=100)
    production = recorder.open_load(fake_manifest("m", 1))
    answer(production, 200, 0.5, 1000)  # slow, long before the candidate arrived
    clock.now = 1300.0
    candidate = recorder.open_load(fake_manifest("m", 2))
    answer(production, 200, 0.004, 300)
    answer(candidate, 200, 0.004, 30)
    clock.now = 1305.0

    comparison = await recorder.compare("m", candidate=2, baseline=1)
    assert (comparison.since, comparison.until) == (1300.0, 1310.0)
    assert comparison.baseline is not None and comparison.baseline.requests == 300
    assert comparison.candidate.latency.quantile(0.99) == comparison.baseline.latency.quantile(0.99)
    assert (comparison.candidate.since, comparison.baseline.until) == (1300.0, 1310.0)
    whole = await recorder.compare("m", candidate=2, baseline=1, since=1000.0)
    assert whole.baseline is not None and whole.baseline.requests == 1300
    alone = await recorder.compare("m", candidate=2, baseline=None)
    assert alone.baseline is None and alone.candidate.requests == 30


async def test_a_wall_clock_stepping_back_counts_in_the_newest_bucket() -> None:
    clock = ManualClock(1000.0)
    recorder = recorder_at(clock)
    load = recorder.open_load(fake_manifest("m", 1))
    clock.now = 1020.0
    answer(load, 200, 0.001, 1)
    clock.now = 1005.0
    answer(load, 200, 0.001, 1)
    clock.now = 1020.0
    assert (await recorder.summary("m", 1, since=1020.0)).requests == 2


async def test_replicas_summaries_merge_by_adding_and_survive_json() -> None:
    clock = ManualClock(2000.0)
    replicas = [recorder_at(clock), recorder_at(clock)]
    for index, recorder in enumerate(replicas):
        load = recorder.open_load(with_prediction(fake_manifest("m", 2)))
        answer(load, 200, 0.001 * (index + 1), 10)
        answer(load, 500, 0.2, index)
        load.compared(agreed=index == 0, difference=0.5 * index)
        load.dropped()
        load.failed()
        assert load.predicted is not None
        load.predicted({}, {"y": np.full((2, 3), 0.1 + 0.5 * index, np.float32)})
    left, right = [await recorder.summary("m", 2) for recorder in replicas]

    shared = [WindowSummary.from_json(json.loads(json.dumps(s.to_json()))) for s in (left, right)]
    assert shared == [left, right]
    fleet = shared[0].merge(shared[1])
    assert (fleet.requests, fleet.errors) == (21, 1)
    assert fleet.loads == left.loads + right.loads
    assert fleet.latency.counts == tuple(a + b for a, b in zip(left.latency.counts, right.latency.counts, strict=True))
    c = fleet.comparisons
    assert (c.compared, c.agreed, c.dropped, c.failed, c.max_abs_difference) == (2, 1, 2, 2, 0.5)
    assert fleet.predictions is not None and fleet.predictions.counts == (6, 0, 6, 0)

    with pytest.raises(ValueError, match="do not merge"):
        left.merge(left.model_copy(update={"version": 3}))
    with pytest.raises(ValueError, match="different bounds"):
        left.latency.merge(LatencyHistogram(bounds_s=(1.0,), counts=(0, 0)))


async def test_an_infinite_difference_survives_json() -> None:
    recorder = recorder_at(ManualClock())
    load = recorder.open_load(fake_manifest("m", 2))
    load.compared(agreed=False, difference=math.inf)  # the shadow's output had another shape
    summary = await recorder.summary("m", 2)
    again = WindowSummary.from_json(json.loads(json.dumps(summary.to_json())))
    assert again.comparisons.max_abs_difference == math.inf


def test_latency_quantiles_are_interpolated_within_about_ten_percent() -> None:
    latencies = np.linspace(0.001, 0.010, 1000)
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    for latency in latencies:
        counts[int(np.searchsorted(LATENCY_BOUNDS_S, latency))] += 1
    histogram = LatencyHistogram(counts=tuple(counts))
    for q in (0.5, 0.9, 0.99):
        assert histogram.quantile(q) == pytest.approx(float(np.quantile(latencies, q)), rel=0.1)
    assert LatencyHistogram().quantile(0.99) is None


@pytest.mark.parametrize("reference", [NUMERIC, CATEGORICAL], ids=["numeric", "categorical"])
@pytest.mark.parametrize("size", [5, SMALL_BATCH_VALUES + 40], ids=["python", "numpy"])
def test_predictions_count_on_the_reference_bins_as_drift_monitoring_does(
    reference: ReferenceHistogram, size: int
) -> None:
    values = np.random.default_rng(7).choice([-1.0, 0.0, 0.3, 1.0, 2.0, 0.99, 7.0, np.nan], size=size)
    bins = PredictionBins("y", reference)
    counts = [0] * (3 + bins.slots)
    bins.count(values.astype(np.float32).reshape(-1, 1), counts, offset=3)
    expected = ReferenceBins(reference).bin(values.astype(np.float32).astype(np.float64))
    histogram = bins.histogram(counts, offset=3)
    assert histogram.counts == tuple(expected.counts.tolist())
    assert histogram.nan == expected.nan and counts[:3] == [0, 0, 0]


def test_a_prediction_is_binned_only_with_a_reference_for_an_output_of_known_width() -> None:
    assert PredictionBins.of(fake_manifest("m", 1)) is None
    assert PredictionBins.of(with_prediction(fake_manifest("m", 1))) is not None
    text = NUMERIC.model_copy(update={"categories": ["a", "b", "c", "d"]})
    assert PredictionBins.of(with_prediction(fake_manifest("m", 1), text)) is None


async def test_a_served_version_records_its_batches_predictions_in_its_own_load() -> None:
    metrics = Metrics()
    served = ServedVersion(with_prediction(fake_manifest("m", 1)), EchoRuntime(), metrics)
    x = np.array([[0.1, 0.6, 0.9]], np.float32)
    await served.infer(request({"x": x}))
    summary = await metrics.evidence.summary("m", 1)
    assert summary.loads == (served.evidence.load_id,)
    assert summary.predictions is not None and summary.predictions.counts == (1, 0, 1, 1)
    await served.close(5)

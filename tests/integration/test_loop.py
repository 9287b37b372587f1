"""The whole loop with real processes: two `hotserve serve` replicas sharing a real Redis, capturing
to a real S3-compatible server (`moto_server`), clients and a label feeder, then `hotserve retrain`
as its own process reading the captured rows and labels back from S3 and releasing v2.

Stages, each asserted: capture (Parquet under the hive layout in S3) -> labels (joined by another
replica than the one that answered) -> live quality (v1's live AUC falls below training by the
alert's margin after the concept shift, while its label-free estimate does not move) -> retrain
(v2 trained on the captured rows, lineage naming the window) -> release (promoted at the default
gates; the demo's policy shortens bake times only) -> serving v2 (answers from v2, its live AUC
above v1's after the shift). Data is tiny and the schedule short; nothing here waits on a clock
for correctness: each stage waits for what it needs (a hang guard bounds the whole).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from demos.loop.run import Loop, LoopResult, LoopSettings
from demos.loop.watch import ALERT_MARGIN
from redis_process import RedisProcess, start_redis
from s3_process import ACCESS, S3Server
from server.contract.manifest import ModelManifest

pytestmark = pytest.mark.integration

BUCKET = "loop"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    process = start_redis()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    server.start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def loop(redis_server: RedisProcess, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[LoopResult, Path]:
    work = tmp_path_factory.mktemp("loop")
    object_store = {**ACCESS, "HOTSERVE_CAPTURE_S3_ENDPOINT": s3.endpoint}
    settings = LoopSettings(
        work=work,
        sink=f"s3://{BUCKET}/captures",
        server_env={
            **object_store,
            "HOTSERVE_REDIS_URL": redis_server.url(4),
            "HOTSERVE_CONTROL_KEY_PREFIX": f"loop-test-{os.getpid()}",
            "HOTSERVE_INTRA_OP_THREADS": "1",
        },
        job_env=object_store,
        replicas=2,
        train_rows=10_000,
        rate_rps=150.0,
        before_shift_s=20.0,
        window_s=5.0,
        span_s=30.0,
        alert_looks=2,
        retrain_rows=4000,
        bake_s=2.0,
        after_s=15.0,
        guard_s=1200.0,
        plot_path=work / "loop-auc.png",
    )
    lines: list[str] = []
    result = Loop(settings, lines.append).run()
    print("\n".join(lines))
    return result, work


def test_capture_writes_the_served_rows_to_the_object_store(loop: tuple[LoopResult, Path], s3: S3Server) -> None:
    keys = s3.keys(BUCKET, "captures/fraud/")
    assert any(k.startswith("captures/fraud/version=1/hour=") and k.endswith(".parquet") for k in keys), keys
    assert any(k.startswith("captures/fraud/labels/hour=") for k in keys), keys


def test_labels_join_and_v1s_live_auc_falls_below_training_after_the_shift(loop: tuple[LoopResult, Path]) -> None:
    result, _ = loop
    assert result.failed == 0 and result.labels_joined > 3500
    shift = next(at for at, name in result.events if name == "concept shift")
    alert = next(at for at, name in result.events if name.startswith("alert"))
    before = [look for look in result.looks_of("1") if look.at < shift and look.live is not None]
    fired = [look for look in result.looks_of("1", alert - 2) if look.below_training][0]
    assert before and fired.reference is not None and fired.live is not None
    assert fired.reference - fired.live > ALERT_MARGIN and fired.labels >= 500
    # a concept shift leaves the inputs and the scores alone: the label-free estimate did not fall
    assert fired.estimate is not None and fired.reference - fired.estimate < ALERT_MARGIN


def test_retrain_trains_v2_on_the_captured_rows_and_the_release_promotes_it(loop: tuple[LoopResult, Path]) -> None:
    result, work = loop
    assert result.retrain_exit == 0, "\n".join(result.retrain_output)
    assert result.production == 2
    lineage = ModelManifest.read(work / "repository" / "fraud" / "2").lineage
    assert lineage.retraining is not None and lineage.retraining.capture_sink == f"s3://{BUCKET}/captures"
    assert lineage.retraining.champion_version == 1 and lineage.retraining.labelled_rows >= 4000
    assert lineage.retraining.challenger_holdout["auc"] > lineage.retraining.champion_holdout["auc"]
    assert any("promoted" in line for line in result.retrain_output)


def test_v2_serves_and_its_live_auc_is_above_v1s_after_the_shift(loop: tuple[LoopResult, Path]) -> None:
    result, work = loop
    shift = next(at for at, name in result.events if name == "concept shift")
    # Windows weighted by their labels (a window of a few dozen labels, e.g. the last one cut
    # short, swings by tenths of AUC on its own): v2's figure against v1's after the shift.
    v1_after = [(w[3], w[4]) for w in result.windows if w[0] == "1" and w[1] >= shift + 5]
    v2 = [(w[3], w[4]) for w in result.windows if w[0] == "2"]
    assert v1_after and v2, result.windows
    assert weighted(v2) > weighted(v1_after), (v1_after, v2)
    assert result.versions.get("2", 0) > 0, result.versions
    assert (work / "loop-auc.png").stat().st_size > 10_000


def weighted(windows: list[tuple[float, int]]) -> float:
    """Windows' AUCs weighted by their labels."""
    return sum(auc * labels for auc, labels in windows) / sum(labels for _, labels in windows)

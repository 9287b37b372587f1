"""Every Prometheus metric hotserve exports, defined once.

Labels: `model`, `version`, `protocol` (v1 | v2 | grpc), `code` (HTTP status; a gRPC call records the
status its outcome has in the REST table). Durations are
seconds. Instruments live in one `CollectorRegistry` per app so tests can build
several apps in one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.evidence.recorder import EvidenceRecorder, MemoryEvidenceRecorder
from server.metrics.unlocked import UnlockedCounter, UnlockedHistogram
from server.monitoring.monitor import DriftMonitor

# Sub-millisecond resolution at the fast end: the demo model answers in ~1 ms.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)
ABS_DIFFERENCE_BUCKETS = (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
LOAD_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Feature lookups: a local-cache hit costs microseconds, a Redis round trip a fraction of a ms.
FEATURE_LATENCY_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
STALENESS_BUCKETS_S = (
    1,
    10,
    60,
    300,
    900,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    30 * 86400,
)
SIGNED_DOCUMENTS = ("control", "release", "evidence")
"""What is signed with the fleet's key in Redis (`server/registry/refusals.py`): the routing, release
records, the replicas' release evidence."""
# A promotion of a loaded version is a reference swap (~ms); one that loads first takes seconds.
SWAP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class DriftCollector(Collector):
    """Drift gauges read from the monitor's latest reports at scrape time.

    Only loaded versions are tracked, so an unloaded version's series vanish instead of lingering
    as stale gauges. PSI is absent while the window holds fewer than the minimum rows.
    """

    def __init__(self, monitor: DriftMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        feature_psi, prediction_psi, window_rows, window_nan, sampled = families
        for report in self._monitor.reports():
            labels = [report.model, str(report.version)]
            window_rows.add_metric(labels, report.window_rows)
            sampled.add_metric(labels, report.sampled_rows_total)
            for feature in report.features:
                window_nan.add_metric([*labels, feature.name], feature.nan)
                if feature.psi is not None:
                    feature_psi.add_metric([*labels, feature.name], feature.psi)
            if report.prediction is not None and report.prediction.psi is not None:
                prediction_psi.add_metric([*labels, report.prediction.name], report.prediction.psi)
        return list(families)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "hotserve_drift_feature_psi",
                "PSI of a feature's live values in the drift window "
                "against the training reference (0.1 watch, 0.2 act).",
                labels=["model", "version", "feature"],
            ),
            GaugeMetricFamily(
                "hotserve_drift_prediction_psi",
                "PSI of the predictions (an output's values) in the drift window against the training reference.",
                labels=["model", "version", "output"],
            ),
            GaugeMetricFamily(
                "hotserve_drift_window_rows",
                "Rows in the drift window of a loaded version.",
                labels=["model", "version"],
            ),
            GaugeMetricFamily(
                "hotserve_drift_window_nan_values",
                "NaN values of a feature in the drift window (counted apart, not in the PSI).",
                labels=["model", "version", "feature"],
            ),
            CounterMetricFamily(
                "hotserve_drift_sampled_rows",
                "Rows sampled into the drift window since the version was loaded.",
                labels=["model", "version"],
            ),
        )


@dataclass
class Metrics:
    """The app's instruments; built by `create_app`, passed to whoever records."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    drift: DriftMonitor = field(default_factory=DriftMonitor)
    """Drift of the loaded versions, exported by `DriftCollector` at scrape time."""
    evidence: EvidenceRecorder = field(default_factory=MemoryEvidenceRecorder)
    """What each load of a version showed, per time window, for guarded promotion: the request
    path feeds it beside these instruments, but control decisions never read the instruments."""

    def __post_init__(self) -> None:
        r = self.registry
        r.register(DriftCollector(self.drift))
        # Updated once per request on the event loop: no lock per update (metrics/unlocked.py).
        self.requests = UnlockedCounter(
            "hotserve_requests", "Inference requests answered.", ["model", "version", "protocol", "code"], registry=r
        )
        self.request_duration = UnlockedHistogram(
            "hotserve_request_duration_seconds",
            "End-to-end inference request latency.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_duration = UnlockedHistogram(
            "hotserve_queue_duration_seconds",
            "Time a request waited in the batcher queue.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        # Updated once per batch, on the event loop too (the batcher answers there).
        self.inference_duration = UnlockedHistogram(
            "hotserve_inference_duration_seconds",
            "Runtime time of one batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = UnlockedHistogram(
            "hotserve_batch_size",
            "Rows per dispatched batch.",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batches = UnlockedCounter(
            "hotserve_batches",
            "Dispatched batches by why they were sent (full, preferred, delay, idle).",
            ["model", "version", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "hotserve_queue_depth", "Requests waiting in the batcher queue.", ["model", "version"], registry=r
        )
        self.inflight_requests = Gauge("hotserve_inflight_requests", "Inference requests being handled.", registry=r)
        self.request_body_bytes_in_flight = Gauge(
            "hotserve_request_body_bytes_in_flight",
            "Bytes of request bodies being read or held, both lanes (declared lengths counted in full); "
            "requests beyond HOTSERVE_MAX_BODY_BYTES_IN_FLIGHT get 503.",
            registry=r,
        )
        self.model_loads = Counter(
            "hotserve_model_loads", "Model version loads by result (success, failure).", ["model", "result"], registry=r
        )
        self.model_load_duration = Histogram(
            "hotserve_model_load_duration_seconds",
            "Load + verify + warm-up time of a version.",
            ["model"],
            buckets=LOAD_BUCKETS_S,
            registry=r,
        )
        self.model_ready = Gauge(
            "hotserve_model_ready", "1 while a model version is loaded and ready.", ["model", "version"], registry=r
        )

        # --- online features (label `view` is `<name>:v<version>`; `layer`/`backend`: local,
        # redis, memory). Those recorded per joined request are unlocked, like the request's own.
        self.feature_lookups = UnlockedCounter(
            "hotserve_feature_lookups",
            "v1 requests that needed stored features, by outcome (ok, defaults, not_found, unavailable, invalid).",
            ["view", "result"],
            registry=r,
        )
        self.feature_hits = UnlockedCounter(
            "hotserve_feature_hits",
            "Entity lookups answered by a layer (local cache, store).",
            ["view", "layer"],
            registry=r,
        )
        self.feature_misses = UnlockedCounter(
            "hotserve_feature_misses",
            "Entity lookups a layer had no entry for (local: went on to the store; store: entity absent).",
            ["view", "layer"],
            registry=r,
        )
        self.feature_lookup_duration = UnlockedHistogram(
            "hotserve_feature_lookup_duration_seconds",
            "Time a request waited for its stored features.",
            ["view"],
            buckets=FEATURE_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.feature_round_trip_keys = Histogram(
            "hotserve_feature_round_trip_keys",
            "Distinct keys per feature store round trip.",
            ["backend"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.feature_round_trip_duration = Histogram(
            "hotserve_feature_round_trip_duration_seconds",
            "Duration of successful store round trips.",
            ["backend"],
            buckets=FEATURE_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.feature_staleness = UnlockedHistogram(
            "hotserve_feature_staleness_seconds",
            "Age of stored features at lookup (now - event time).",
            ["view"],
            buckets=STALENESS_BUCKETS_S,
            registry=r,
        )
        self.feature_store_errors = Counter(
            "hotserve_feature_store_errors",
            "Store round trips that failed (timeout, connection) or were refused by the open circuit breaker.",
            ["backend", "kind"],
            registry=r,
        )
        self.feature_breaker_state = Gauge(
            "hotserve_feature_breaker_state",
            "Feature store circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
        )

        # --- control path: swaps, drains, memory, aliases, admin operations
        self.model_swaps = Counter(
            "hotserve_model_swaps",
            "Admin changes of the version serving a model's unpinned "
            "requests (promote, rollback), by result (success, failure).",
            ["model", "result"],
            registry=r,
        )
        self.model_swap_duration = Histogram(
            "hotserve_model_swap_duration_seconds",
            "From a promote/rollback call to the new "
            "routing published (includes loading the version when it was not loaded).",
            ["model"],
            buckets=SWAP_BUCKETS_S,
            registry=r,
        )
        self.model_unloads = Counter(
            "hotserve_model_unloads",
            "Versions drained and unloaded, by whether every routed request finished first (drained, timeout).",
            ["model", "result"],
            registry=r,
        )
        self.model_drain_duration = Histogram(
            "hotserve_model_drain_duration_seconds",
            "From a version leaving the routing table to its session being released.",
            ["model"],
            buckets=SWAP_BUCKETS_S,
            registry=r,
        )
        self.model_memory = Gauge(
            "hotserve_model_memory_bytes",
            "Memory cost of a loaded version: the process RSS growth its load and warm-up caused.",
            ["model", "version"],
            registry=r,
        )
        self.model_version_info = Gauge(
            "hotserve_model_version_info",
            "1 for each alias and the version it routes to; `production` is the version answering unpinned requests.",
            ["model", "alias", "version"],
            registry=r,
        )
        self.admin_operations = Counter(
            "hotserve_admin_operations",
            "Admin API changes by operation and result (ok, noop, refused, failed).",
            ["operation", "result"],
            registry=r,
        )
        # --- releases (server/release/): set by the replica driving each release
        self.release_step = Gauge(
            "hotserve_release_step",
            "Step of the model's running release driven by this replica (0: the shadow, then each "
            "canary weight in turn); -1 when none runs here.",
            ["model"],
            registry=r,
        )
        self.release_gate_value = Gauge(
            "hotserve_release_gate_value",
            "The latest measured value of each gate of the model's release (error_rate, p99_ratio, "
            "agreement: its Wilson lower bound, psi).",
            ["model", "gate"],
            registry=r,
        )
        self.release_verdicts = Counter(
            "hotserve_release_verdicts",
            "Releases ended by this replica, by verdict (promoted, rolled_back, inconclusive, aborted).",
            ["model", "verdict"],
            registry=r,
        )
        # --- traffic policy, shadow, fleet control state (server/routing/, server/shadow.py)
        # Shadow copies are counted and compared on the event loop (server/shadow.py), one per request
        # at most: no lock per update, like the request's own instruments.
        self.shadow_requests = UnlockedCounter(
            "hotserve_shadow_requests",
            "Copies of requests for a shadow version, by outcome "
            "(compared, dropped: shadow queue full, failed: the shadow raised).",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.shadow_agreements = UnlockedCounter(
            "hotserve_shadow_agreements",
            "Compared shadow answers by whether they agreed with the primary's (result: agree, disagree).",
            ["model", "version", "result"],
            registry=r,
        )
        self.shadow_abs_difference = UnlockedHistogram(
            "hotserve_shadow_abs_difference",
            "Largest absolute output difference between a shadow answer and the primary's.",
            ["model", "version"],
            buckets=ABS_DIFFERENCE_BUCKETS,
            registry=r,
        )
        self.shadow_duration = UnlockedHistogram(
            "hotserve_shadow_duration_seconds",
            "Time a shadow version took to answer a copy.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        # --- capture (server/capture/): accepted on the event loop (no lock, like the request's own
        # instruments); written, dropped and sink outcomes by the writer thread (locked instruments).
        self.capture_accepted = UnlockedCounter(
            "hotserve_capture_accepted_records",
            "Captured rows accepted into the capture buffer (sampled answered requests; a request of n rows is n).",
            ["model"],
            registry=r,
        )
        self.capture_written = Counter(
            "hotserve_capture_written_records",
            "Rows written to the capture sink in Parquet files, by dataset (capture, labels).",
            ["model", "dataset"],
            registry=r,
        )
        self.capture_dropped = Counter(
            "hotserve_capture_dropped_records",
            "Captured rows (or label rows) never written, by reason (buffer_full: refused at the tap, the "
            "buffer bound was reached: the writer or the sink fell behind; unconvertible; shutdown: the sink "
            "did not take them before the process stopped; closed: offered after the writer stopped).",
            ["model", "dataset", "reason"],
            registry=r,
        )
        self.capture_written_bytes = Counter(
            "hotserve_capture_written_bytes",
            "Bytes of Parquet files written to the capture sink.",
            ["model", "dataset"],
            registry=r,
        )
        self.capture_files = Counter(
            "hotserve_capture_files", "Parquet files written to the capture sink.", ["model", "dataset"], registry=r
        )
        self.capture_sink_errors = Counter(
            "hotserve_capture_sink_errors",
            "Files the capture sink refused or failed to store (each attempt; the file is retried).",
            ["sink"],
            registry=r,
        )
        self.capture_sink_up = Gauge(
            "hotserve_capture_sink_up",
            "1 while the capture sink took the last file it was given; 0 after a refusal, until one succeeds.",
            ["sink"],
            registry=r,
        )
        self.capture_put_duration = Histogram(
            "hotserve_capture_put_duration_seconds",
            "Time the capture sink took to store one file.",
            ["sink"],
            buckets=LOAD_BUCKETS_S,
            registry=r,
        )
        self.capture_buffered_records = Gauge(
            "hotserve_capture_buffered_records",
            "Captured rows held in memory, not yet written (queued, staged, or in files the sink refused).",
            registry=r,
        )
        self.capture_buffered_bytes = Gauge(
            "hotserve_capture_buffered_bytes",
            "What the capture buffer bound counts for the rows held (their tensors' bytes and overhead).",
            registry=r,
        )
        self.traffic_weight = Gauge(
            "hotserve_traffic_weight_percent",
            "Share of unpinned requests routed to a version on this replica (after fallbacks for versions not ready).",
            ["model", "version"],
            registry=r,
        )
        self.control_revision = Gauge(
            "hotserve_control_revision", "Revision of the control state (routing) this replica applied.", registry=r
        )
        self.control_state_up = Gauge(
            "hotserve_control_state_up",
            "1 while the control-state store (Redis or file) answers; 0: serving the last routing applied.",
            registry=r,
        )
        self.control_document_verified = Gauge(
            "hotserve_control_document_verified",
            "1 while the stored documents of a kind verify (signature, format, for a release record its step); "
            "0: one still read did not and is not applied. document: control (the routing), release (release "
            "records), evidence (the replicas' release evidence).",
            ["document"],
            registry=r,
        )
        self.control_document_rejected = Counter(
            "hotserve_control_document_rejected",
            "Stored documents refused because their signature did not verify (or a release record's step does "
            "not follow from the last one seen), each counted once; by document (control, release, evidence).",
            ["document"],
            registry=r,
        )
        for document in SIGNED_DOCUMENTS:  # from the start: a first refusal shows as an increase
            self.control_document_rejected.labels(document)
            self.control_document_verified.labels(document).set(1)
        self.control_document_restored = Counter(
            "hotserve_control_document_restored",
            "Times this replica wrote its last routing back after the control document was lost.",
            registry=r,
        )
        self.control_signing_enabled = Gauge(
            "hotserve_control_signing_enabled",
            "1 when control documents are signed and verified (HOTSERVE_CONTROL_SIGNING_KEY); by store.",
            ["store"],
            registry=r,
        )

        # --- labels and live quality (server/labels/, server/quality/): labelled figures are the
        # fleet's (every replica reads the same pairs), estimates this replica's served rows.
        self.labels = Counter(
            "hotserve_labels",
            "Labels posted, by outcome (joined: to a served row; duplicate: its row was already "
            "labelled, counted once; unknown: no served row, or older than the label horizon; dropped: "
            "its window's pairs were full; refused: wrong type or NaN, the batch refused).",
            ["model", "outcome"],
            registry=r,
        )
        self.quality = Gauge(
            "hotserve_quality",
            "Live quality of a version over the last quality span, from labelled rows (training's "
            "metric definitions): auc, log_loss, accuracy, predicted_positive_rate, observed_positive_rate, "
            "macro_f1, rmse, mae.",
            ["model", "version", "metric"],
            registry=r,
        )
        self.quality_labels = Gauge(
            "hotserve_quality_labels",
            "Labelled rows the live quality figures of a version rest on (the last quality span).",
            ["model", "version"],
            registry=r,
        )
        self.quality_estimate = Gauge(
            "hotserve_quality_estimate",
            "Label-free estimate (CBPE) of a classifier's quality from its own probabilities, over the "
            "rows this replica served in the last quality span: auc, accuracy, macro_f1.",
            ["model", "version", "metric"],
            registry=r,
        )
        self.quality_estimate_error = Gauge(
            "hotserve_quality_estimate_error",
            "The label-free estimate of the labelled rows minus their measured figure (how far the estimate was off).",
            ["model", "version", "metric"],
            registry=r,
        )
        self.quality_reference = Gauge(
            "hotserve_quality_reference",
            "The training (validation) figure of a version, from model.json's lineage metrics.",
            ["model", "version", "metric"],
            registry=r,
        )
        self.served_index_errors = Counter(
            "hotserve_served_index_errors",
            "Captured rows the served index could not keep (Redis or its file unavailable): labels for them will be unknown.",
            registry=r,
        )

    def record_quality(
        self, model: str, version: int, labels: int, figures: dict[str, float], estimate_error: dict[str, float]
    ) -> None:
        """One version's labelled figures (any thread)."""
        v = str(version)
        self.quality_labels.labels(model, v).set(labels)
        _set_only(self.quality, model, v, figures)
        _set_only(self.quality_estimate_error, model, v, estimate_error)

    def record_quality_estimate(
        self, model: str, version: int, estimate: dict[str, float], reference: Mapping[str, float]
    ) -> None:
        """One version's label-free estimate and its training figures (any thread)."""
        v = str(version)
        _set_only(self.quality_estimate, model, v, estimate)
        _set_only(self.quality_reference, model, v, reference)

    def model_found(self, model: str) -> None:
        """Create a model's failure counters at 0 when the repository scan first finds it.

        Prometheus takes a series' first sample as its start: a failure counter born at 1 shows no
        `increase()`, so without this the first failed load or swap after start-up never alerts.
        """
        self.model_loads.labels(model, "failure")
        self.model_swaps.labels(model, "failure")
        self.release_step.labels(model).set(-1)
        for verdict in ("promoted", "rolled_back", "inconclusive", "aborted"):
            self.release_verdicts.labels(model, verdict)


def _set_only(gauge: Gauge, model: str, version: str, values: Mapping[str, float]) -> None:
    """Set a (model, version, metric) gauge to `values`, removing the metrics it no longer has (a
    figure whose rows left the span is gone, not stale)."""
    for labels in [key for key in _children(gauge) if key[:2] == (model, version) and key[2] not in values]:
        gauge.remove(*labels)
    for metric, value in values.items():
        gauge.labels(model, version, metric).set(value)


def _children(gauge: Gauge) -> list[tuple[str, ...]]:
    with gauge._lock:  # prometheus_client has no public listing of a metric's label sets
        return [tuple(key) for key in gauge._metrics]

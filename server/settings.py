"""Process settings: every `HOTSERVE_*` environment variable, read once by the entry point.

Per-model behaviour (batching, features) lives in `model.json`, not here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server configuration; `hotserve serve` flags use the same names."""

    model_config = SettingsConfigDict(env_prefix="HOTSERVE_", extra="ignore", use_attribute_docstrings=True)

    model_repository: Path = Path("model_repository")
    """Folder holding `<model>/<version>/model.onnx` + `model.json`."""
    host: str = "127.0.0.1"
    """Interface to bind; containers set 0.0.0.0."""
    port: int = Field(default=8080, ge=1, le=65535)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve `/metrics` on this port alone (a listener of its own, so a network policy can admit
    only the monitoring namespace to it); unset: `/metrics` on the main port."""
    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the gRPC Open Inference Protocol service (same host and process as REST); unset: no gRPC."""
    grpc_server: Literal["hotserve", "grpcio"] = "hotserve"
    """The gRPC transport: hotserve's own HTTP/2 server on the event loop (`server/grpc_api/h2/`), or
    grpcio's grpc.aio server (the fallback: same services, codes and limits, a fifth to a half of the
    calls/s on a 2-core machine: docs/benchmarks.md)."""
    execution_providers: str = "CUDAExecutionProvider,CPUExecutionProvider"
    """onnxruntime providers in order of preference; unavailable ones are skipped."""
    intra_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads inside one operator; 0: onnxruntime's default."""
    inter_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads across operators; 0: onnxruntime's default."""
    intra_op_spinning: bool = False
    """Let idle onnxruntime threads spin waiting for work: a little less latency per call, but
    they burn the cores the event loop needs (off by default: a server is never alone on its cores)."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False
    """Per-request access log lines (costly at high request rates)."""
    log_format: Literal["json", "text"] = "json"
    """`json`: one JSON object per line (time, level, logger, message, request fields) for log
    collectors; `text`: one readable line per record, for a terminal."""
    log_success_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of successful inference requests logged as request events (errors always are)."""

    # --- drift monitoring (PSI of live inputs and predictions against model.json's reference) ---
    drift_enabled: bool = True
    """Sample each loaded version's features and predictions and compute their drift."""
    drift_window_rows: int = Field(default=10_000, ge=1)
    """Rows of the sliding window per version (the most recent ones)."""
    drift_window_s: float = Field(default=0.0, ge=0)
    """Also leave out rows older than this; 0: the window is by row count only."""
    drift_min_rows: int = Field(default=1_000, ge=1)
    """Fewer values than this in the window: no PSI is published (it would be noise)."""
    drift_interval_s: float = Field(default=10.0, gt=0)
    """How often each version's PSI is recomputed (off the request path)."""

    # --- evidence for guarded promotion (per load of a version, in time buckets) ---
    evidence_bucket_s: float = Field(default=10.0, gt=0)
    """Width of the time buckets each loaded version's evidence is kept in: a candidate and its
    baseline are compared over the same whole buckets."""
    evidence_window_s: float = Field(default=3600.0, gt=0)
    """How far back evidence is kept (older buckets are dropped)."""
    release_tick_s: float = Field(default=1.0, gt=0)
    """How often each replica publishes its evidence for releases and the driving replica
    advances them; the driving lease lapses after three ticks (at least 2 s) without renewal."""
    mlflow_tracking_uri: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("mlflow_tracking_uri", "HOTSERVE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    """MLflow tracking server whose Model Registry a release's verdict is recorded in (a policy's
    `registry`); also read from MLflow's own `MLFLOW_TRACKING_URI`, and its credentials from
    `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`_PASSWORD`. A secret (a URL may hold a
    password)."""

    # --- labels and live quality (server/labels/, server/quality/) ---------------------------
    label_horizon_s: float = Field(default=259_200.0, gt=0)
    """How long an answered row can still be labelled (3 days): the served index keeps each
    captured row this long (Redis TTL, or the embedded file's expiry); a later label is unknown.
    Redis memory is about 200 bytes x captured rows per second x this."""
    quality_window_s: float = Field(default=300.0, gt=0)
    """Width of the windows of served time live quality is kept and reported in."""
    quality_span_s: float = Field(default=3600.0, gt=0)
    """The span the exported live quality covers (the last this many seconds of served time)."""
    quality_max_pairs: int = Field(default=50_000, ge=1)
    """Most labelled rows kept per model, version and window; later labels of a full window are
    counted (`hotserve_labels_total{outcome="dropped"}`) but not kept."""
    quality_refresh_s: float = Field(default=10.0, gt=0)
    """How often live quality and its label-free estimate are recomputed (off the event loop)."""
    quality_estimate_rows: int = Field(default=20_000, ge=1)
    """Most recent served rows per version the label-free estimate is computed from."""

    # --- capture of answered requests (server/capture/) -------------------------------------
    capture_sink: str = ""
    """Where captured requests (and label files) are written as Parquet: a local directory, or
    `s3://bucket/prefix` (credentials from the standard AWS_* variables, never settings); empty:
    capture off."""
    capture_sample: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of each model's answered requests captured, unless the model has its own share
    (admin API `PUT /admin/models/{name}/capture`, kept in the control state)."""
    capture_s3_endpoint: str = ""
    """`http(s)://host:port` of an S3-compatible server (MinIO, Ceph) for an `s3://` sink; empty: AWS."""
    capture_rotate_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """A partition's staged rows become a file at this many bytes (in memory, before compression)."""
    capture_rotate_age_s: float = Field(default=60.0, gt=0)
    """Or when its oldest staged row is this old (seconds): also the most of capture a crash loses."""
    capture_buffer_records: int = Field(default=200_000, ge=1)
    """Most captured rows held in memory unwritten; beyond it (or `capture_buffer_bytes`) new ones
    are dropped and counted, never the request slowed."""
    capture_buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Most bytes of captured tensors held in memory unwritten."""
    capture_shadow_wait_s: float = Field(default=2.0, ge=0)
    """How long a captured request waits for its shadow copy's answer before it is written without."""
    capture_retry_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between two tries of a file the sink refused (the backoff starts at 0.5 s)."""

    # --- limits and lifecycle
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest inference request body (or gRPC message) accepted; larger ones get 413 (gRPC:
    RESOURCE_EXHAUSTED)."""
    max_route_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest body of every other route (admin, features admin, repository extension); larger
    ones get 413 before they are read, and admin routes check the token before reading any."""
    max_body_bytes_in_flight: int = Field(default=256 * 1024 * 1024, ge=1024)
    """Request bodies being read or held at once, over every connection and both lanes (a declared
    Content-Length counts in full before a byte is read); a request that would pass it gets 503
    with `Retry-After` before its body is read. At least the largest single body allowed."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """How long SIGTERM waits for queued and running batches before exiting."""
    control_state_path: Path | None = None
    """JSON file holding aliases (e.g. `production`); unset: `<model_repository>/.hotserve/control.json`."""
    inline_run_max_us: float = Field(default=500.0, ge=0)
    """A batch runs on the event loop instead of a worker thread when batches of its size (by
    power-of-two bucket of rows) ran faster than this lately: for a model that cheap the thread
    hop costs the loop more than the model. 0: every batch goes to the workers."""
    shadow_max_pending: int = Field(default=256, ge=1)
    """Shadow copies in flight (queued or running in the shadow version's batcher); beyond it a
    copy is dropped and counted, never the primary."""
    shadow_yield_to_primary: bool = True
    """A copy is dropped (and counted) when the primary that answered has requests waiting, or a
    full batch of copies already waits for the shadow: shadow work uses only capacity the primary
    does not need. False: every drawn copy is sent, up to `shadow_max_pending`."""
    shadow_max_inference_share: float = Field(default=0.5, gt=0, le=1)
    """Largest share of a primary-and-shadow pair's inference time (their batches' run time, over
    the last second) the shadow may take; beyond it copies are dropped and counted until it falls
    back. 0.5: never more than the primary itself; 1: no ceiling."""
    control_poll_interval_s: float = Field(default=2.0, gt=0)
    """How often the control-state file is re-read for changes made by another process."""
    repository_poll_interval_s: float = Field(default=0.0, ge=0)
    """Rescan the model repository this often for new versions; 0: only on an admin rescan."""
    keep_previous_loaded: bool = True
    """After a promotion keep the previous `production` version loaded, so a rollback is an
    instant routing change (costs that version's memory until the next promotion)."""

    # --- admin API: secrets are never flags (a flag shows in `ps`) and never logged
    admin_tokens: SecretStr | None = None
    """Named admin bearer tokens, `name:token,name:token`; the name goes into the audit log."""
    admin_token: SecretStr | None = None
    """One unnamed admin bearer token (audited as `admin`)."""
    admin_tokens_file: Path | None = None
    """File of `name:token` lines (`#` comments), e.g. a mounted Secret."""
    audit_log_path: Path | None = None
    """JSON-lines audit log of admin changes; unset: `audit.jsonl` beside the control state."""

    # --- online feature store (v1 feature join) -------------------------------------------
    redis_url: SecretStr | None = None
    """Redis holding online features and the fleet's control state (routing) (`redis://[:password@]
    host:port/db`, `rediss://`, `unix://`); unset: the embedded in-process feature store and a local
    control-state file. A secret: never a flag, never logged."""
    redis_password_file: Path | None = None
    """File holding the Redis password (a mounted Secret), used when the URL carries none; with
    Redis ACLs put the user name in the URL (`redis://hotserve@host:6379/0`)."""
    redis_tls_ca_file: Path | None = None
    """CA bundle that a `rediss://` (TLS) server's certificate is checked against; unset: the system's."""
    redis_timeout_ms: float = Field(default=50.0, gt=0)
    """Longest one Redis connect or lookup round trip may take before it counts as a failure."""
    feast_redis_url: SecretStr | None = None
    """Redis of a Feast online store (`online_store: type: redis` in `feature_store.yaml`, its
    `connection_string` as a `redis://host:port/db` URL), read by feature views with a `feast`
    source; unset: `redis_url`. A secret, like `redis_url`."""
    feature_table: str | None = None
    """CSV/Parquet table (or `demo:fraud`) loaded into the embedded store at start-up for every
    feature view in the repository whose entity key and features it has."""
    feature_cache_size: int = Field(default=100_000, ge=0)
    """Entities kept in the local cache in front of the store; 0: no local cache."""
    feature_cache_ttl_s: float = Field(default=5.0, ge=0)
    """How long a looked-up entity (or its absence) is served from the local cache."""
    feature_gather_window_ms: float = Field(default=0.0, ge=0)
    """How long a lookup waits for others to share its round trip; 0: those of the same event-loop turn."""
    feature_breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failed round trips that open the circuit breaker (lookups then fail at once)."""
    feature_breaker_reset_s: float = Field(default=2.0, gt=0)
    """How long an open breaker waits before one probe round trip may close it."""

    @field_validator(
        "redis_url",
        "feast_redis_url",
        "admin_token",
        "admin_tokens",
        "control_signing_key",
        "grpc_port",
        "mlflow_tracking_uri",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("capture_sink")
    @classmethod
    def _capture_sink_form(cls, value: str) -> str:
        if "://" in value and not value.startswith("s3://"):
            raise ValueError("must be a local directory or s3://bucket/prefix")
        if value.startswith("s3://") and not value.removeprefix("s3://").strip("/"):
            raise ValueError("an s3:// sink names a bucket: s3://bucket/prefix")
        return value

    @field_validator("redis_url", "feast_redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    # --- fleet control state in Redis (with redis_url) -------------------------------------
    control_redis_timeout_ms: float = Field(default=500.0, gt=0)
    """Socket timeout of Redis calls on the control path (rare, small: no need to be as tight as features)."""
    control_key_prefix: str = "hotserve"
    """Redis keys of the control state: `<prefix>:control` (document) and `<prefix>:control:changes`."""
    control_reconcile_interval_s: float = Field(default=5.0, gt=0)
    """Replicas re-read the routing from Redis this often even without a published change."""
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """This replica's name in the routing reports (the pod name under Kubernetes)."""
    control_start_timeout_s: float = Field(default=60.0, ge=0)
    """At start, how long to keep trying to read the routing (Redis down) before giving up."""

    # --- signing of the control document (secrets: never flags, never logged) ---------------
    control_signing_key: SecretStr | None = None
    """HMAC-SHA256 key signing the control document; replicas apply only documents that verify.
    Unset (and no key file): documents are written and read unsigned, which only a local control
    file should rely on (the Helm chart always sets a key)."""
    control_signing_key_file: Path | None = None
    """File holding the signing key (a mounted Secret); used when `control_signing_key` is unset."""

    @model_validator(mode="after")
    def _budget_holds_one_body(self) -> Settings:
        largest = max(self.max_request_bytes, self.max_route_request_bytes)
        if self.max_body_bytes_in_flight < largest:
            raise ValueError(
                f"max_body_bytes_in_flight ({self.max_body_bytes_in_flight}) is below the largest body allowed "
                f"({largest}): such a body could never be accepted"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def resolved_control_state_path(self) -> Path:
        return self.control_state_path or self.model_repository / ".hotserve" / "control.json"

    @property
    def resolved_audit_log_path(self) -> Path:
        return self.audit_log_path or self.resolved_control_state_path.parent / "audit.jsonl"

    @property
    def provider_preference(self) -> list[str]:
        return [p.strip() for p in self.execution_providers.split(",") if p.strip()]

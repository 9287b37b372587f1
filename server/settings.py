"""Process settings: every `HOTSERVE_*` environment variable, read once by the entry point.

Per-model behaviour (batching, features) lives in `model.json`, not here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server configuration; `hotserve serve` flags use the same names."""

    model_config = SettingsConfigDict(env_prefix="HOTSERVE_", extra="ignore",
                                      use_attribute_docstrings=True)

    model_repository: Path = Path("model_repository")
    """Folder holding `<model>/<version>/model.onnx` + `model.json`."""
    host: str = "127.0.0.1"
    """Interface to bind; containers set 0.0.0.0."""
    port: int = Field(default=8080, ge=1, le=65535)
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
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """How long SIGTERM waits for queued and running batches before exiting."""
    control_state_path: Path | None = None
    """JSON file holding aliases (e.g. `production`); unset: `<model_repository>/.hotserve/control.json`."""
    shadow_queue_size: int = Field(default=256, ge=1)
    """Shadow copies waiting to run; beyond it a copy is dropped (and counted), never the primary."""
    shadow_workers: int = Field(default=2, ge=1)
    """Shadow copies run at once (they go through the shadow version's own batcher)."""
    control_poll_interval_s: float = Field(default=2.0, gt=0)
    """How often the control-state file is re-read for changes made by another process."""


    # --- online feature store (v1 feature join) -------------------------------------------
    redis_url: SecretStr | None = None
    """Redis holding online features and the fleet's control state (routing) (`redis://[:password@]
    host:port/db`, `rediss://`, `unix://`); unset: the embedded in-process feature store and a local
    control-state file. A secret: never a flag, never logged."""
    redis_timeout_ms: float = Field(default=50.0, gt=0)
    """Longest one Redis connect or lookup round trip may take before it counts as a failure."""
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

    # --- admin ----------------------------------------------------------------------------
    admin_token: SecretStr | None = None
    """Bearer token of the `/admin` routes; unset: they are off (404). A secret: never a flag."""

    @field_validator("redis_url", "admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("redis_url")
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

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def provider_preference(self) -> list[str]:
        return [p.strip() for p in self.execution_providers.split(",") if p.strip()]

"""`open_labels`: the served index, the pair store, label intake and live quality, chosen from
settings at the composition root (`server/app.py`).

With `HOTSERVE_REDIS_URL`: Redis for both (fleet-wide: a label may land on any replica, and every
replica reports the same figures). Without: one SQLite file, `_hotserve/labels.sqlite3` in the
local capture directory (or beside the control state when capture writes elsewhere or is off),
which survives restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

from server.labels.intake import LabelFiles, LabelIntake
from server.labels.served_index import ObservedIndex, RedisServedIndex, ServedIndex, SqliteServedIndex
from server.metrics.instruments import Metrics
from server.quality.contract import QualityContracts
from server.quality.live import LiveQuality, ServedScores
from server.quality.pairs import PairStore, RedisPairStore, SqlitePairStore
from server.redis_access import redis_access_for
from server.settings import Settings

EMBEDDED_FILE = Path("_hotserve") / "labels.sqlite3"
"""Under the capture directory: pyarrow.dataset skips names starting with `_`."""


@dataclass(frozen=True, slots=True)
class Labels:
    """What the labels route, the quality route and capture's writer use."""

    index: ObservedIndex
    """Hand to capture's writer (`CaptureWriter.index`)."""
    intake: LabelIntake
    quality: LiveQuality

    def close(self) -> None:
        self.index.close()
        self.intake.pairs.close()


def embedded_path(settings: Settings) -> Path:
    """The SQLite file of the embedded served index and pairs."""
    sink = settings.capture_sink
    if sink and "://" not in sink:
        return Path(sink) / EMBEDDED_FILE
    return settings.resolved_control_state_path.parent / "labels.sqlite3"


def open_labels(
    settings: Settings,
    metrics: Metrics,
    versions: Callable[[], Iterable[tuple[str, int]]],
    files: LabelFiles | None = None,
) -> Labels:
    """Build (no I/O beyond opening the embedded file; Redis connects on first use)."""
    contracts = QualityContracts(settings.model_repository)
    keep_s = settings.label_horizon_s + settings.quality_span_s
    index: ServedIndex
    pairs: PairStore
    access = redis_access_for(settings)
    on_error = metrics.served_index_errors.inc
    if access is not None:
        timeout_s = settings.control_redis_timeout_ms / 1000.0
        client = redis.Redis.from_url(
            access.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **access.client_options()
        )
        prefix = settings.control_key_prefix
        index = RedisServedIndex(client, prefix, settings.label_horizon_s, on_error)
        pairs = RedisPairStore(client, prefix, settings.quality_window_s, keep_s, settings.quality_max_pairs)
    else:
        path = embedded_path(settings)
        index = SqliteServedIndex(path, settings.label_horizon_s, on_error)
        pairs = SqlitePairStore(path, settings.quality_window_s, keep_s, settings.quality_max_pairs)
    served = ServedScores(contracts, settings.quality_estimate_rows)
    quality = LiveQuality(
        pairs, contracts, served, metrics, settings.quality_span_s, settings.quality_refresh_s, versions
    )
    return Labels(
        index=ObservedIndex(index, [served.observe]),
        intake=LabelIntake(index, pairs, contracts, metrics, files),
        quality=quality,
    )

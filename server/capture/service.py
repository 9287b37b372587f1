"""`open_capture`: the capture writer the settings ask for (composition root, `server/app.py`)."""

from __future__ import annotations

from server.capture.sink import open_sink
from server.capture.writer import CaptureWriter
from server.metrics.instruments import Metrics
from server.settings import Settings


def open_capture(settings: Settings, metrics: Metrics) -> CaptureWriter | None:
    """A writer to `capture_sink` (not started), or None when capture is off (no sink set)."""
    if not settings.capture_sink:
        return None
    return CaptureWriter(
        open_sink(settings.capture_sink, settings.capture_s3_endpoint),
        metrics,
        replica=settings.replica_id,
        rotate_bytes=settings.capture_rotate_bytes,
        rotate_age_s=settings.capture_rotate_age_s,
        shadow_wait_s=settings.capture_shadow_wait_s,
        retry_max_s=settings.capture_retry_max_s,
        max_records=settings.capture_buffer_records,
        max_bytes=settings.capture_buffer_bytes,
    )

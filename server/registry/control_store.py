"""Choosing the control-state store from the settings (control path; called by `create_app`).

`create_app` opens the store and hands it to the registry and the controller, as it opens
the feature store: the registry never reads settings to decide where the routing lives.
"""

from __future__ import annotations

from server.metrics.instruments import Metrics
from server.registry.control_state import ControlState, FileControlState
from server.settings import Settings


def open_control_state(settings: Settings, metrics: Metrics) -> ControlState:
    """Redis (one routing shared by the fleet) when `redis_url` is set, else the local file."""
    metrics.control_state_up.set(1)
    if settings.redis_url is not None:
        from server.registry.redis_control_state import RedisControlState

        return RedisControlState(
            settings.redis_url.get_secret_value(),
            key_prefix=settings.control_key_prefix,
            timeout_s=settings.control_redis_timeout_ms / 1000.0,
            reconcile_interval_s=settings.control_reconcile_interval_s,
            on_up_change=lambda up: metrics.control_state_up.set(1 if up else 0),
        )
    return FileControlState(settings.resolved_control_state_path, poll_interval_s=settings.control_poll_interval_s)

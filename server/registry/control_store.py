"""Which control-state store this process uses, built from the settings (control path; called by
`create_app`, which hands the store to the registry and the controller, as it opens the feature
store: the registry never reads settings to decide where the routing lives).

Redis (one routing shared by the fleet, signed when a key is configured, restored when lost,
seeded from the local file when it never held one: `control_move.py`) when `HOTSERVE_REDIS_URL`
is set, else the local file. Refusals and restorations are counted in
the metrics and audited in this replica's audit log (refusals rate limited, `refusals.py`).
"""

from __future__ import annotations

import logging

from server.metrics.instruments import Metrics
from server.redis_access import redis_access_for
from server.registry.audit import FileAuditLog
from server.registry.control_events import RecordedControlEvents
from server.registry.control_move import FileSeed
from server.registry.control_signing import signer_for
from server.registry.control_state import ControlState, FileControlState
from server.registry.refusals import RecordedRefusals, Refusals
from server.settings import Settings

log = logging.getLogger(__name__)


def open_control_state(settings: Settings, metrics: Metrics, refusals: Refusals | None = None) -> ControlState:
    """The configured store. Raises ValueError for unusable Redis credentials or signing key.

    `refusals`: where refused documents are reported (shared with the release store, so one
    document is counted once); by default this replica's audit log and `metrics`."""
    metrics.control_state_up.set(1)
    signer = signer_for(settings)
    access = redis_access_for(settings)
    if access is None:
        metrics.control_signing_enabled.labels("file").set(0)
        return FileControlState(settings.resolved_control_state_path, poll_interval_s=settings.control_poll_interval_s)
    from server.registry.redis_control_state import RedisControlState

    metrics.control_signing_enabled.labels("redis").set(1 if signer.signing else 0)
    if not signer.signing:
        log.warning(
            "the control document in Redis is NOT signed: whoever can write to %s can change the routing; "
            "set HOTSERVE_CONTROL_SIGNING_KEY or HOTSERVE_CONTROL_SIGNING_KEY_FILE",
            access.shown,
        )
    audit = FileAuditLog(settings.resolved_audit_log_path)
    return RedisControlState(
        access,
        key_prefix=settings.control_key_prefix,
        timeout_s=settings.control_redis_timeout_ms / 1000.0,
        reconcile_interval_s=settings.control_reconcile_interval_s,
        signer=signer,
        seed=FileSeed(settings.resolved_control_state_path, audit, settings.replica_id),
        events=RecordedControlEvents(
            metrics,
            audit,
            settings.replica_id,
            f"{settings.control_key_prefix}:control",
            refusals or RecordedRefusals(metrics, audit, settings.replica_id),
        ),
    )

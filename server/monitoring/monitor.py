"""`DriftMonitor`: the drift of every loaded version, recomputed periodically off the request path.

`ServedVersion` calls `track(manifest)` when it is built and `untrack` when it closes, so the
versions monitored are exactly the loaded ones and an unloaded version's numbers vanish with it.
The lifespan in `server/app.py` runs `run()`, which recomputes every version's report on a worker
thread every `interval_s`; the Prometheus collector and the drift route only read `latest`.
"""

from __future__ import annotations

import asyncio
import logging
from types import MappingProxyType

from server.contract.manifest import ModelManifest
from server.monitoring.drift import DriftConfig, VersionDrift, plan_drift
from server.monitoring.report import DriftReport

log = logging.getLogger(__name__)


class DriftMonitor:
    """Tracked versions by (model, version); copy-on-write so other threads read them without a lock."""

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        self._tracked: MappingProxyType[tuple[str, int], VersionDrift] = MappingProxyType({})

    def track(self, manifest: ModelManifest) -> VersionDrift | None:
        """Start monitoring a version being loaded; None when it has nothing to monitor (or drift is off)."""
        if not self.config.enabled:
            return None
        plan = plan_drift(manifest)
        for reason in plan.skipped:  # a model without any reference is normal; a partial one is not
            log.log(
                logging.INFO if manifest.drift is None else logging.WARNING,
                "model %r version %d drift: %s",
                manifest.name,
                manifest.version,
                reason,
            )
        if not plan.quantities:
            return None
        drift = VersionDrift(manifest, plan, self.config)
        self._tracked = MappingProxyType({**self._tracked, (drift.name, drift.version): drift})
        return drift

    def untrack(self, drift: VersionDrift) -> None:
        """The version closed: its numbers are no longer exported."""
        key = (drift.name, drift.version)
        if self._tracked.get(key) is drift:
            self._tracked = MappingProxyType({k: v for k, v in self._tracked.items() if k != key})

    def get(self, name: str, version: int) -> VersionDrift | None:
        return self._tracked.get((name, version))

    def reports(self) -> list[DriftReport]:
        """The latest report of every tracked version (what a scrape exports)."""
        return [drift.latest for drift in self._tracked.values()]

    def compute_all(self) -> None:
        """Recompute every tracked version's report. Blocking numpy work: call off the loop."""
        for drift in list(self._tracked.values()):
            try:
                drift.compute()
            except Exception:
                log.exception("model %r version %d: drift computation failed", drift.name, drift.version)

    async def run(self) -> None:
        """Recompute every `interval_s` on a worker thread until cancelled."""
        if not self.config.enabled:
            return
        while True:
            await asyncio.sleep(self.config.interval_s)
            if self._tracked:
                await asyncio.to_thread(self.compute_all)

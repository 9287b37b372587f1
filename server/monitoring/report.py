"""`DriftReport`: the latest drift numbers of one loaded version, as the exporter and the drift route read them.

Built off the request path by `VersionDrift.compute`; immutable, replaced whole on each recompute,
so a scrape or a route reads one consistent set of numbers without a lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.contract.manifest import ReferenceHistogram
from server.monitoring.psi import Status, status_of


@dataclass(frozen=True, slots=True)
class QuantityDrift:
    """PSI of one feature column or of the prediction over the window."""

    name: str
    kind: Literal["numeric", "categorical"]
    values: int
    """Values binned (NaN excluded)."""
    nan: int
    """NaN values in the window, counted apart."""
    psi: float | None
    """None while the window holds fewer than the minimum rows."""
    live_proportions: tuple[float, ...] | None
    """Share of the binned values per bin (categorical: the last bin is "other"); None with no values."""
    expected_proportions: tuple[float, ...]
    """The reference's share per bin, aligned with `live_proportions`."""
    reference: ReferenceHistogram

    @property
    def status(self) -> Status | None:
        return None if self.psi is None else status_of(self.psi)


@dataclass(frozen=True, slots=True)
class DriftReport:
    """One version's window and PSI values at `computed_at`."""

    model: str
    version: int
    window_rows: int
    """Rows in the sliding window (by row count, and by age when a maximum age is set)."""
    sampled_rows_total: int
    """Rows sampled since the version was loaded."""
    computed_at: float | None
    """Unix time of the computation; None before the first one."""
    features: tuple[QuantityDrift, ...]
    prediction: QuantityDrift | None
    """PSI of the values of `prediction.name` (a model output), all values of a row pooled."""

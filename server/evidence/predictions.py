"""`PredictionBins`: a version's predictions counted on its drift reference bins, once per batch.

Request path (the batcher's per-batch observer, on the loop). The bins are those of model.json's
`drift.prediction`, with the semantics of drift monitoring (`server/monitoring/psi.py`): below the
first edge counts in the first bin, above the last in the last, a categorical prediction has one
more bin for any other value, NaN is counted apart. A small batch is counted by a Python loop
(numpy's fixed cost per call is several microseconds); a large one by `ReferenceBins.bin`.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from server.contract.manifest import ModelManifest, ReferenceHistogram
from server.evidence.summary import PredictionHistogram
from server.monitoring.drift import plan_drift
from server.monitoring.psi import ReferenceBins

SMALL_BATCH_VALUES = 32
"""Up to this many values a Python loop is cheaper than numpy."""


class PredictionBins:
    """The bins one version's prediction output is counted on."""

    def __init__(self, output: str, reference: ReferenceHistogram) -> None:
        self.output = output
        self._reference = ReferenceBins(reference)
        self.bins = self._reference.bins
        self.slots = self.bins + 1
        """Counters a bucket gives these bins: one per bin, then one for NaN."""
        self._inner_edges = [float(edge) for edge in reference.bin_edges[1:-1]]
        self._bin_edges = tuple(float(edge) for edge in reference.bin_edges)
        self._category_values: tuple[float, ...] | None = None
        self._categories: dict[float, int] | None = None
        if reference.categories is not None:
            numeric = [c for c in reference.categories if not isinstance(c, str)]
            if len(numeric) != len(reference.categories):
                raise ValueError(f"{reference.name!r}: text categories cannot be counted")
            self._category_values = tuple(numeric)
            self._categories = {value: i for i, value in enumerate(numeric)}

    @classmethod
    def of(cls, manifest: ModelManifest) -> PredictionBins | None:
        """The bins of `manifest`'s prediction reference; None without one or when its output
        cannot be binned (text, unknown width: the same rules as drift monitoring)."""
        reference = None if manifest.drift is None else manifest.drift.prediction
        if reference is None or any(isinstance(c, str) for c in reference.categories or ()):
            return None
        output = plan_drift(manifest).prediction_output
        return None if output is None else cls(output, reference)

    def count(self, values: np.ndarray, counts: list[int], offset: int) -> None:
        """Add `values` into `counts[offset : offset + bins]`, NaN into `counts[offset + bins]`."""
        nan_slot = offset + self.bins
        if values.size > SMALL_BATCH_VALUES:
            binned = self._reference.bin(values.ravel().astype(np.float64, copy=False))
            for index, n in enumerate(binned.counts.tolist()):
                counts[offset + index] += n
            counts[nan_slot] += binned.nan
            return
        categories = self._categories
        if categories is None:
            edges = self._inner_edges
            for x in values.ravel().tolist():
                counts[nan_slot if x != x else offset + bisect_right(edges, x)] += 1
        else:
            other = offset + self.bins - 1
            for x in values.ravel().tolist():
                if x != x:
                    counts[nan_slot] += 1
                else:
                    found = categories.get(x)
                    counts[other if found is None else offset + found] += 1

    def histogram(self, counts: list[int], offset: int) -> PredictionHistogram:
        """The summary of the counts at `offset` (as `count` laid them out)."""
        return PredictionHistogram(
            output=self.output,
            bin_edges=self._bin_edges,
            categories=self._category_values,
            counts=tuple(counts[offset : offset + self.bins]),
            nan=counts[offset + self.bins],
        )

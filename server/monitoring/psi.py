"""PSI of live values against one training `ReferenceHistogram`: binning and the index (off the request path).

The bins are the reference's, never the live data's (NannyML's choice, not Evidently's default of
equal-width bins over reference and live values combined, which moves with every window):

* numeric: the reference's quantile edges; a value below the first edge counts in the first bin,
  above the last in the last bin (as `np.histogram` over clipped values, which built the reference);
* categorical (`categories` set): one bin per training category and one "other" bin for any value
  equal to none of them, expected at `1 - sum(proportions)`;
  text categories (a classifier's class names) are counted by position: the live values are
  class indices;
* NaN is counted apart and is in no bin.

    PSI = sum over bins of (a - e) * ln(a / e),  a = max(live share, EPSILON), e = max(reference share, EPSILON)

EPSILON keeps an empty bin finite. Under 0.1 the distribution is stable, 0.1 to 0.2 worth
watching, above 0.2 it has moved enough to act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from server.contract.manifest import ReferenceHistogram

EPSILON = 1e-4
"""Share given to an empty bin (live or reference) so the logarithm stays finite."""
WATCH_THRESHOLD = 0.1
ACT_THRESHOLD = 0.2

Status = Literal["stable", "watch", "act"]


def psi(counts: np.ndarray, expected: np.ndarray, epsilon: float = EPSILON) -> float:
    """PSI of live bin `counts` against the `expected` reference shares (same bins, same order)."""
    total = counts.sum()
    if total <= 0:
        raise ValueError("PSI of zero values is undefined")
    actual = np.maximum(counts / total, epsilon)
    reference = np.maximum(expected, epsilon)
    return float(np.sum((actual - reference) * np.log(actual / reference)))


def status_of(value: float) -> Status:
    if value > ACT_THRESHOLD:
        return "act"
    return "watch" if value > WATCH_THRESHOLD else "stable"


@dataclass(frozen=True, slots=True)
class Binned:
    """Live values of one quantity sorted into the reference's bins."""

    counts: np.ndarray
    """Values per bin (int64); categorical: the last entry is the "other" bin."""
    nan: int
    """NaN values, in no bin."""


class ReferenceBins:
    """The bins of one reference histogram, prepared once per loaded version."""

    def __init__(self, reference: ReferenceHistogram) -> None:
        self.reference = reference
        self.categorical = reference.categories is not None
        proportions = np.asarray(reference.proportions, dtype=np.float64)
        if reference.categories is not None:
            text = any(isinstance(c, str) for c in reference.categories)
            # Text categories (class names) are counted by position: live values are class indices.
            self._categories = (
                np.arange(len(reference.categories), dtype=np.float64)
                if text
                else np.asarray(reference.categories, dtype=np.float64)
            )
            other = max(0.0, 1.0 - float(proportions.sum()))
            self.expected = np.append(proportions, other)
        else:
            # Interior edges only: searchsorted on them sends everything below the second edge
            # to bin 0 and everything from the last interior edge up to the last bin.
            self._inner_edges = np.asarray(reference.bin_edges[1:-1], dtype=np.float64)
            self.expected = proportions

    @property
    def bins(self) -> int:
        return int(self.expected.size)

    def bin(self, values: np.ndarray) -> Binned:
        """Count 1-D float64 `values` into these bins (NaN apart)."""
        nan = np.isnan(values)
        nan_count = int(nan.sum())
        if nan_count:
            values = values[~nan]
        if self.categorical:
            categories = self._categories
            index = np.searchsorted(categories, values)
            found = index < categories.size
            found[found] = categories[index[found]] == values[found]
            counts = np.bincount(index[found], minlength=self.bins)
            counts[-1] = values.size - int(found.sum())
        else:
            index = np.searchsorted(self._inner_edges, values, side="right")
            counts = np.bincount(index, minlength=self.bins)
        return Binned(counts.astype(np.int64), nan_count)

    def psi(self, binned: Binned) -> float:
        return psi(binned.counts, self.expected)

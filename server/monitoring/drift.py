"""`VersionDrift`: drift monitoring of one loaded version (sampled on the request path, computed off it).

`record(inputs, outputs)` is the batcher's per-batch hook: it appends the batch's feature tensor
(`features.input` of model.json: the v1 joined feature vector and v2 tensors alike, since both
reach the batcher as that tensor) and its prediction output to the version's `SampleWindow`
(for a classifier with text labels, the class index: the argmax of its per-class scores).
`compute()` runs on a worker thread every few seconds: it bins the window on the reference
histograms of model.json's `drift` section and turns them into a `DriftReport` (see `psi.py`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from server.contract.manifest import ModelManifest, ReferenceHistogram
from server.monitoring.psi import ReferenceBins
from server.monitoring.report import DriftReport, QuantityDrift
from server.monitoring.window import SampleWindow
from server.request import Tensors
from server.settings import Settings

log = logging.getLogger(__name__)

_UNBINNABLE = {"BYTES"}


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Window and publication rules shared by every version (`HOTSERVE_DRIFT_*`)."""

    enabled: bool = True
    window_rows: int = 10_000
    window_s: float = 0.0
    """Also drop rows older than this many seconds; 0: the window is by row count only."""
    min_rows: int = 1_000
    interval_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftConfig:
        return cls(
            enabled=settings.drift_enabled,
            window_rows=settings.drift_window_rows,
            window_s=settings.drift_window_s,
            min_rows=settings.drift_min_rows,
            interval_s=settings.drift_interval_s,
        )


@dataclass(frozen=True, slots=True)
class _Quantity:
    name: str
    column: int
    """First column of the window holding it."""
    width: int
    """Window columns pooled into it (a feature: 1; the prediction: its values per row)."""
    bins: ReferenceBins


@dataclass(slots=True)
class DriftPlan:
    """What of a version can be monitored, read from its manifest once at load."""

    feature_input: str | None = None
    input_columns: int = 0
    """Columns of `feature_input`'s rows."""
    taken_columns: list[int] | None = None
    """Columns of the input kept in the window, in window order; None: all, in order."""
    prediction_output: str | None = None
    prediction_width: int = 0
    prediction_classes: bool = False
    """The prediction is the class index, the argmax of `prediction_output`'s scores (text labels)."""
    quantities: list[_Quantity] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Why something with a reference is not monitored (logged at load, shown by the route)."""

    @property
    def feature_width(self) -> int:
        """Window columns holding features."""
        if self.taken_columns is not None:
            return len(self.taken_columns)
        return self.input_columns if self.feature_input is not None else 0

    @property
    def width(self) -> int:
        return self.feature_width + self.prediction_width


def plan_drift(manifest: ModelManifest) -> DriftPlan:
    """The features (with a reference histogram) and the prediction output this version can monitor."""
    plan = DriftPlan()
    reference = manifest.drift
    if reference is None:
        plan.skipped.append("model.json has no drift reference: nothing monitored")
        return plan
    inputs = {spec.name: spec for spec in manifest.inputs}
    spec = manifest.features
    if reference.features and spec is None:
        plan.skipped.append(
            "feature references but no feature spec (features.columns) to place them: features not monitored"
        )
    elif reference.features and spec is not None:
        tensor = inputs[spec.input]
        if len(tensor.shape) != 2 or tensor.shape[1] not in (-1, len(spec.columns)) or tensor.datatype in _UNBINNABLE:
            plan.skipped.append(
                f"input {spec.input!r} is {tensor.datatype} {tensor.shape}, not "
                f"[-1, {len(spec.columns)}] numbers: features not monitored"
            )
        else:
            taken: list[int] = []
            for histogram in reference.features:
                if histogram.name not in spec.columns:
                    plan.skipped.append(f"feature reference {histogram.name!r} names no column: not monitored")
                    continue
                plan.quantities.append(_Quantity(histogram.name, len(taken), 1, ReferenceBins(histogram)))
                taken.append(spec.columns.index(histogram.name))
            if taken:
                plan.feature_input = spec.input
                plan.input_columns = len(spec.columns)
                plan.taken_columns = None if taken == list(range(len(spec.columns))) else taken
    if reference.prediction is not None:
        name = reference.prediction_output or manifest.outputs[0].name
        output = next((o for o in manifest.outputs if o.name == name), None)
        if output is None:
            plan.skipped.append(
                f"prediction reference describes {name!r}, which is not an output: prediction not monitored"
            )
        elif output.datatype in _UNBINNABLE:
            scores = _class_scores(manifest, reference.prediction)
            if scores is None:
                plan.skipped.append(
                    f"output {name!r} is {output.datatype}, not numbers, and no output holds one score per "
                    f"class of its reference: prediction not monitored"
                )
            else:
                # Text labels: the class mix is counted by class index, the argmax of the scores.
                plan.prediction_output = scores
                plan.prediction_classes = True
                plan.prediction_width = 1
                plan.quantities.append(_Quantity(name, plan.feature_width, 1, ReferenceBins(reference.prediction)))
        elif any(d < 0 for d in output.shape[1:]):
            plan.skipped.append(
                f"output {name!r} has shape {output.shape}: values per row unknown, prediction not monitored"
            )
        else:
            plan.prediction_output = name
            plan.prediction_width = math.prod(output.shape[1:])
            plan.quantities.append(
                _Quantity(name, plan.feature_width, plan.prediction_width, ReferenceBins(reference.prediction))
            )
    return plan


def _class_scores(manifest: ModelManifest, reference: ReferenceHistogram) -> str | None:
    """The output holding one score per class of a text-label `reference` (its `categories`, in
    order: a classifier's label is the class of the highest score), if exactly one does."""
    classes = reference.categories
    if not classes or not all(isinstance(c, str) for c in classes):
        return None
    scores = [o.name for o in manifest.outputs if o.datatype not in _UNBINNABLE and list(o.shape[1:]) == [len(classes)]]
    return scores[0] if len(scores) == 1 else None


class VersionDrift:
    """One version's sample window and latest `DriftReport`."""

    def __init__(self, manifest: ModelManifest, plan: DriftPlan, config: DriftConfig) -> None:
        self.name = manifest.name
        self.version = manifest.version
        self.plan = plan
        self.config = config
        self.window = SampleWindow(config.window_rows, plan.width)
        self._feature_input = plan.feature_input
        self._input_columns = plan.input_columns
        self._taken = None if plan.taken_columns is None else np.asarray(plan.taken_columns)
        self._prediction_output = plan.prediction_output
        self._prediction_width = plan.prediction_width
        self._prediction_classes = plan.prediction_classes
        self._broken = False
        self.latest = self._report(np.empty((0, plan.width)), computed_at=None)

    # --- request path -----------------------------------------------------------------------

    def record(self, inputs: Tensors, outputs: Tensors) -> None:
        """Append one finished batch (the batcher calls this on the loop; a few slice copies)."""
        if self._broken:
            return
        try:
            parts = []
            if self._feature_input is not None:
                features = inputs[self._feature_input]
                if features.ndim != 2 or features.shape[1] != self._input_columns:
                    return  # a [-1, -1] input sent at another width: not these columns
                parts.append(features if self._taken is None else features[:, self._taken])
            if self._prediction_output is not None:
                prediction = outputs[self._prediction_output]
                if self._prediction_classes:
                    parts.append(prediction.argmax(axis=1)[:, None])
                else:
                    parts.append(prediction.reshape(prediction.shape[0], self._prediction_width))
            self.window.append(parts, time.monotonic())
        except Exception:  # never let monitoring fail a request path; say so once
            self._broken = True
            log.exception(
                "model %r version %d: drift sampling failed; drift monitoring of this version stops",
                self.name,
                self.version,
            )

    # --- off the request path ---------------------------------------------------------------

    def compute(self) -> DriftReport:
        """Bin the window on the reference edges and publish a new `latest` report (call off the loop)."""
        since = time.monotonic() - self.config.window_s if self.config.window_s > 0 else None
        self.latest = self._report(self.window.snapshot(since), computed_at=time.time())
        return self.latest

    def _report(self, values: np.ndarray, computed_at: float | None) -> DriftReport:
        rows = int(values.shape[0])
        quantities = [
            self._quantity(q, values[:, q.column : q.column + q.width].ravel(), rows) for q in self.plan.quantities
        ]
        # The prediction, when monitored, is the last quantity (its columns come last).
        prediction = quantities.pop() if self._prediction_output is not None else None
        return DriftReport(
            self.name, self.version, rows, self.window.appended, computed_at, tuple(quantities), prediction
        )

    def _quantity(self, quantity: _Quantity, values: np.ndarray, rows: int) -> QuantityDrift:
        bins = quantity.bins
        binned = bins.bin(values)
        counted = int(binned.counts.sum())
        # Features need min_rows values; the prediction min_rows rows (its values are pooled).
        enough = (rows if quantity.width > 1 else counted) >= self.config.min_rows and counted > 0
        return QuantityDrift(
            name=quantity.name,
            kind="categorical" if bins.categorical else "numeric",
            values=counted,
            nan=binned.nan,
            psi=bins.psi(binned) if enough else None,
            live_proportions=tuple((binned.counts / counted).tolist()) if counted else None,
            expected_proportions=tuple(bins.expected.tolist()),
            reference=bins.reference,
        )

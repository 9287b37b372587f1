"""`QualityContract`: what a version's answers and labels mean for quality (control path).

Read from the version's `model.json` (`prediction`: task, output, threshold; `drift.prediction`:
a multiclass model's class names; `lineage.metrics`: the training figures live quality compares
against), cached per (model, version) because labels come for versions long unloaded. Versions
without a prediction contract have no task, so their labels cannot be judged and are refused.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.contract.manifest import DEFAULT_DECISION_THRESHOLD, ModelManifest, Task
from server.errors import HotserveError
from server.registry.loader import read_manifest

LABEL_OUTPUT = "label"


@dataclass(frozen=True, slots=True)
class QualityContract:
    """One version's task, the output its quality is computed from, and its training figures."""

    model: str
    version: int
    task: Task
    output: str
    """The prediction output (binary: the positive score; multiclass: the class scores, or the
    class when only the label is output; regression: the value)."""
    threshold: float = DEFAULT_DECISION_THRESHOLD
    classes: tuple[str, ...] = ()
    """A multiclass model's class names in output order (as text), when the manifest lists them."""
    class_count: int = 0
    """A multiclass model's number of classes (0: not known from the manifest)."""
    reference: Mapping[str, float] = field(default_factory=dict)
    """The training (validation) figures from `lineage.metrics`, by metric name."""

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> QualityContract | None:
        """None when the manifest records no task."""
        if manifest.prediction is None:
            return None
        task = manifest.prediction.task
        output = manifest.prediction_output
        classes: tuple[str, ...] = ()
        count = 0
        if task == "multiclass":
            histogram = manifest.drift.prediction if manifest.drift is not None else None
            if histogram is not None and histogram.name == LABEL_OUTPUT and histogram.categories:
                classes = tuple(_class_text(c) for c in histogram.categories)
                count = len(classes)
            # Class scores when the graph has them (exports name the label as the prediction
            # output; its probabilities beside it are what log loss and the estimate need).
            scores = [
                o for o in manifest.outputs if o.datatype.startswith("FP") and len(o.shape) == 2 and o.shape[-1] > 1
            ]
            fitting = [o for o in scores if not count or o.shape[-1] == count]
            if fitting:
                named = [o for o in fitting if o.name == output]
                output = (named or fitting)[0].name
                count = count or fitting[0].shape[-1]
        return cls(
            model=manifest.name,
            version=manifest.version,
            task=task,
            output=output,
            threshold=manifest.prediction.decision_threshold or DEFAULT_DECISION_THRESHOLD,
            classes=classes,
            class_count=count,
            reference={k: float(v) for k, v in manifest.lineage.metrics.items() if math.isfinite(v)},
        )

    def class_index(self, label: object) -> int | None:
        """A multiclass label as its class index: when the manifest lists class names, a label is
        a class name (as in the training data: `"cat"`, or `3` for integer classes); otherwise it
        is the index itself. None when it is neither."""
        if isinstance(label, bool):
            return None
        if self.classes:
            text = _class_text(label)
            return self.classes.index(text) if text in self.classes else None
        if isinstance(label, (int, np.integer)) or (isinstance(label, float) and label.is_integer()):
            index = int(label)
            return index if 0 <= index < self.class_count else None
        return None

    def score(self, outputs: Mapping[str, object]) -> list[float] | None:
        """The row's score as quality reads it (binary: [p]; multiclass: K scores, or [class];
        regression: [value]); None when the output is missing or not numeric."""
        value = outputs.get(self.output)
        if value is None:
            return None
        values = value if isinstance(value, list) else [value]
        if self.task == "multiclass" and values and isinstance(values[0], str):
            index = self.class_index(values[0])
            return None if index is None else [float(index)]
        try:
            numbers = [float(v) for v in values]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        if not numbers:
            return None
        if self.task == "binary":
            return [numbers[-1]]  # one score, or the positive class's of two columns
        return numbers


def _class_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class QualityContracts:
    """Contracts of every version of the repository, read once each (any thread)."""

    def __init__(self, repository: Path) -> None:
        self._repository = repository
        self._cache: dict[tuple[str, int], QualityContract | None] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: int) -> QualityContract | None:
        """The version's contract; None when it has no task or its manifest cannot be read."""
        key = (model, version)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        try:
            manifest = read_manifest(self._repository / model / str(version), model, version)
        except HotserveError:
            return None  # not cached: the folder may appear later (a new export)
        contract = QualityContract.from_manifest(manifest)
        with self._lock:
            self._cache[key] = contract
        return contract

    def versions(self, model: str) -> list[int]:
        """The versions of `model` in the repository (ascending)."""
        folder = self._repository / model
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and int(p.name) > 0)

"""`LabelIntake`: labels by request id -> joined pairs for live quality, and label files for
retraining (control path; `POST /v2/models/{name}/labels`, `hotserve labels`).

One batch, in a worker thread (never the event loop):
1. parse the body (`parse.py`); check every label against the model's task (binary: 0 or 1;
   multiclass: a class of the model; regression: a finite number; NaN never). Any label that
   does not fit refuses the WHOLE batch, 400, listing the offending ids: nothing was taken, so the
   client fixes the file and sends it all again (labels are idempotent, so that is safe).
2. keep the last label of each (request id, row) the batch repeats;
3. look every (request id, row) up in the served index (`served_index.py`): unknown or expired
   ones are counted and named in the answer (their labels are still written to the label files:
   the capture files may hold their rows longer than the index does);
4. store the joined pairs (`server/quality/pairs.py`): a row labelled before counts once;
5. append the labels to the label files through capture's writer, `<model>/labels/hour=<H>/`
   (columns request_id, row, label float64, ts, version), when capture is on.

The index and the pair store are read and written before anything is reported as taken: with
Redis down the batch is refused 503 and nothing else moves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa

from server.capture.record import HOUR_FORMAT
from server.errors import InvalidInput, ModelNotFound
from server.labels.parse import LabelRows, parse_labels
from server.labels.served_index import ServedEntry, ServedIndex
from server.metrics.instruments import Metrics
from server.quality.contract import QualityContract, QualityContracts
from server.quality.pairs import Pair, PairStore

LABELS_DATASET = "labels"
LISTED_IDS = 100
"""Most request ids an answer names (refused or unknown); the counts are always complete."""

LABEL_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("label", pa.float64(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("version", pa.int32(), nullable=True),
    ]
)
"""Columns of the label files (issue 33's contract; retraining reads them)."""


class LabelFiles(Protocol):
    """Where label rows are appended (capture's writer, `CaptureWriter.append_table`)."""

    def append_table(self, partition: str, table: pa.Table, *, model: str, dataset: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class IntakeResult:
    model: str
    received: int
    joined: int
    """Labels joined to a served row not labelled before."""
    duplicates: int
    """Labels of a row already labelled (in this batch or before): counted once, the later kept."""
    unknown: int
    unknown_ids: list[dict[str, Any]]
    dropped: int
    """Joined labels not kept for live quality because their window was full."""
    written: int
    """Labels queued for the label files (0 when capture is off)."""

    def as_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "received": self.received,
            "joined": self.joined,
            "duplicates": self.duplicates,
            "unknown": self.unknown,
            "unknown_ids": self.unknown_ids,
            "dropped": self.dropped,
            "written": self.written,
        }


class LabelIntake:
    def __init__(
        self,
        index: ServedIndex,
        pairs: PairStore,
        contracts: QualityContracts,
        metrics: Metrics,
        files: LabelFiles | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.pairs = pairs
        self.contracts = contracts
        self._metrics = metrics
        self.files = files
        self._clock = clock

    def model_contract(self, model: str) -> QualityContract:
        """The newest version's contract: what a label of `model` must be. 404 for a model the
        repository does not have; 400 when no version records its task."""
        versions = self.contracts.versions(model)
        if not versions:
            raise ModelNotFound(model)
        for version in reversed(versions):
            contract = self.contracts.get(model, version)
            if contract is not None:
                return contract
        raise InvalidInput(
            "model",
            detail=f"no version of {model!r} records its task (model.json `prediction`), so labels cannot be judged",
        )

    def take(self, model: str, body: bytes, content_type: str) -> IntakeResult:
        """Take one batch (blocking; see the module docstring). Raises InvalidInput (400, nothing
        taken), ModelNotFound (404), LabelStoreUnavailable (503, nothing taken)."""
        contract = self.model_contract(model)
        rows = parse_labels(body, content_type)
        values = self._check(contract, rows)
        received = len(rows)
        latest: dict[tuple[str, int], int] = {}
        for i, key in enumerate(zip(rows.request_ids, rows.rows, strict=True)):
            latest[key] = i
        in_batch_duplicates = received - len(latest)
        keys = list(latest)
        entries = self.index.get_many(model, keys)
        pairs, unknown = self._join(model, rows, values, latest, keys, entries)
        added = self.pairs.add(model, pairs)
        written = self._write(model, rows, values, latest, keys, entries)
        duplicates = in_batch_duplicates + added.replaced
        counts = {"joined": added.new, "duplicate": duplicates, "unknown": len(unknown), "dropped": added.dropped}
        for outcome, count in counts.items():
            if count:
                self._metrics.labels.labels(model, outcome).inc(count)
        return IntakeResult(
            model=model,
            received=received,
            joined=added.new,
            duplicates=duplicates,
            unknown=len(unknown),
            unknown_ids=[{"request_id": rid, "row": row} for rid, row in unknown[:LISTED_IDS]],
            dropped=added.dropped,
            written=written,
        )

    def _check(self, contract: QualityContract, rows: LabelRows) -> list[float]:
        """Each label as a number of the task (class index for multiclass), or 400 naming every
        label that does not fit."""
        values: list[float] = []
        refused: list[dict[str, Any]] = []
        for i, label in enumerate(rows.labels):
            value, problem = label_value(contract, label)
            if problem is not None:
                refused.append({"request_id": rows.request_ids[i], "row": rows.rows[i], "problem": problem})
            values.append(value)
        if refused:
            self._metrics.labels.labels(contract.model, "refused").inc(len(rows))
            named = ", ".join(f"{r['request_id']!r} (row {r['row']}): {r['problem']}" for r in refused[:3])
            more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
            error = InvalidInput(
                "label",
                detail=f"{len(refused)} of {len(rows)} labels do not fit a {contract.task} model, so none was "
                f"taken: {named}{more}",
            )
            error.fields["refused"] = refused[:LISTED_IDS]
            error.fields["refused_count"] = len(refused)
            raise error
        return values

    def _join(
        self,
        model: str,
        rows: LabelRows,
        values: list[float],
        latest: dict[tuple[str, int], int],
        keys: Sequence[tuple[str, int]],
        entries: Sequence[ServedEntry | None],
    ) -> tuple[list[Pair], list[tuple[str, int]]]:
        pairs: list[Pair] = []
        unknown: list[tuple[str, int]] = []
        refused: list[dict[str, Any]] = []
        for key, entry in zip(keys, entries, strict=True):
            if entry is None:
                unknown.append(key)
                continue
            contract = self.contracts.get(model, entry.version)
            score = None if contract is None else contract.score(entry.outputs)
            if contract is None or score is None:
                unknown.append(key)  # a version whose answers quality cannot read
                continue
            i = latest[key]
            value, problem = label_value(contract, rows.labels[i])
            if problem is not None:  # the answering version's classes differ from the newest's
                refused.append({"request_id": key[0], "row": key[1], "problem": f"version {entry.version}: {problem}"})
                continue
            shadow_score = None
            if entry.shadow_version is not None and entry.shadow_outputs is not None:
                shadow = self.contracts.get(model, entry.shadow_version)
                shadow_score = None if shadow is None else shadow.score(entry.shadow_outputs)
            pairs.append(
                Pair(
                    request_id=key[0],
                    row=key[1],
                    version=entry.version,
                    ts=entry.ts,
                    label=value,
                    score=score,
                    shadow_version=entry.shadow_version if shadow_score is not None else None,
                    shadow_score=shadow_score,
                )
            )
        if refused:
            error = InvalidInput("label", detail=f"{len(refused)} labels do not fit the version that answered")
            error.fields["refused"] = refused[:LISTED_IDS]
            error.fields["refused_count"] = len(refused)
            raise error
        return pairs, unknown

    def _write(
        self,
        model: str,
        rows: LabelRows,
        values: list[float],
        latest: dict[tuple[str, int], int],
        keys: Sequence[tuple[str, int]],
        entries: Sequence[ServedEntry | None],
    ) -> int:
        if self.files is None or not keys:
            return 0
        now = self._clock()
        stamps = [rows.ts[latest[k]] or now for k in keys]
        by_hour: dict[str, list[int]] = {}
        for j, ts in enumerate(stamps):
            by_hour.setdefault(datetime.fromtimestamp(ts, UTC).strftime(HOUR_FORMAT), []).append(j)
        written = 0
        for hour, members in by_hour.items():
            table = pa.table(
                [
                    pa.array([keys[j][0] for j in members], pa.string()),
                    pa.array([keys[j][1] for j in members], pa.int32()),
                    pa.array([values[latest[keys[j]]] for j in members], pa.float64()),
                    pa.array([datetime.fromtimestamp(stamps[j], UTC) for j in members], pa.timestamp("us", tz="UTC")),
                    pa.array([None if (e := entries[j]) is None else e.version for j in members], pa.int32()),
                ],
                schema=LABEL_SCHEMA,
            )
            if self.files.append_table(f"{model}/labels/hour={hour}", table, model=model, dataset=LABELS_DATASET):
                written += len(members)
        return written


def label_value(contract: QualityContract, label: object) -> tuple[float, str | None]:
    """(the label as quality stores it, None) or (nan, why it does not fit the task)."""
    if contract.task == "multiclass":
        if isinstance(label, float) and not math.isfinite(label):
            return math.nan, "NaN is not a class"
        index = contract.class_index(label)
        if index is None:
            known = list(contract.classes) if contract.classes else f"indices 0..{contract.class_count - 1}"
            return math.nan, f"{label!r} is not a class of the model ({known})"
        return float(index), None
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        return math.nan, f"expected a number, got {type(label).__name__} {label!r}"
    value = float(label)
    if not math.isfinite(value):
        return math.nan, f"{label!r} is not a finite number"
    if contract.task == "binary" and value not in (0.0, 1.0):
        return math.nan, f"a binary label is 0 or 1, got {label!r}"
    return value, None

"""Every graph `hotserve import` may publish, checked against the original file on the check rows.

The original's outputs on the check rows (the reference table's, or generated) are what each
candidate must reproduce: the graph as imported (edited or not), its basic-optimised form
(kept only if parity holds, as `hotserve export` does) and, asked for, dynamic int8 judged by
parity on its floating-point outputs and by the metric change on labelled rows. Before that
the original's own rows prove the first axis is a batch axis (`graph_runs.check_batch_axis`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from exporters.errors import ExportError, ModelRefused
from exporters.imports import graph_runs
from exporters.imports.options import ImportOptions
from exporters.imports.source_model import SourceModel
from exporters.shared import optimize, parity, precision, signature

AGAINST = "source"
"""How parity messages name the original file."""
_QUANTIZED_OPS = {
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "QLinearConv",
    "QAttention",
    "DynamicQuantizeLSTM",
}

CheckInputs = dict[str, np.ndarray] | graph_runs.Samples


@dataclass(frozen=True)
class Candidate:
    """A graph that passed parity, and its outputs on the check rows."""

    path: Path
    outputs: list[np.ndarray]
    optimized: bool = False
    metric_deltas: dict[str, float] = field(default_factory=dict)


@dataclass
class SourceParity:
    """The original's outputs on the check rows, and the parity reports of the candidates so far."""

    source: SourceModel
    options: ImportOptions
    check_inputs: CheckInputs
    expected: list[np.ndarray]
    reports: list[parity.ParityReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def outputs(self, path: Path) -> list[np.ndarray]:
        session = graph_runs.open_session(path, self.options.op_libraries)
        if isinstance(self.check_inputs, list):
            return graph_runs.run_samples(session, self.check_inputs)
        return graph_runs.run_rows(session, self.check_inputs)

    def checked(self, stage: str, path: Path, tolerance: float, float_outputs_only: bool = False) -> Candidate:
        """Parity of `path` against the original on the check rows; recorded in `reports`.

        Text outputs (string labels) must be equal. With `float_outputs_only` (int8) only
        floating-point outputs are held to the tolerance: a class label may flip where its
        probability sits on the decision boundary, which the metric change judges.
        """
        got = self.outputs(path)
        kinds = [value.dtype.kind for value in self.expected]
        if not float_outputs_only:
            for i in (i for i, kind in enumerate(kinds) if kind in "OSU"):
                if not np.array_equal(self.expected[i], got[i]):
                    raise ExportError(
                        f"parity check failed for the {stage} model: output "
                        f"{self.source.outputs[i].name!r} differs from the source's"
                    )
        keep = [i for i, kind in enumerate(kinds) if kind == "f" or (kind not in "OSU" and not float_outputs_only)]
        self.reports.append(
            parity.compare(stage, [self.expected[i] for i in keep], [got[i] for i in keep], tolerance, against=AGAINST)
        )
        return Candidate(path, got)


def original_outputs(source: SourceModel, options: ImportOptions, check_inputs: CheckInputs) -> SourceParity:
    """Run the original file on the check rows; with a batch axis, prove it is one and declare
    mis-declared output batch dimensions dynamic."""
    session = graph_runs.open_session(source.path, options.op_libraries)
    classes = source.zipmaps or None
    if isinstance(check_inputs, list):
        expected = graph_runs.run_samples(session, check_inputs, classes)
    else:
        expected = graph_runs.run_rows(session, check_inputs, classes)
        graph_runs.check_batch_axis(source.path, session, check_inputs, expected, options.tolerance, classes)
        source.declare_batch_dims()
    return SourceParity(source, options, check_inputs, expected)


def publishable_graph(checks: SourceParity, labels: np.ndarray | None, work: Path) -> Candidate:
    """The graph to publish: as imported, optimised if that keeps parity, int8 if asked."""
    options = checks.options
    imported_path = work / "imported.onnx"
    checks.source.save(imported_path)
    final = checks.checked("imported", imported_path, options.tolerance)
    if options.optimize:
        final = _optimised(checks, final, work)
    if options.quantize == "int8":
        final = _int8(checks, final, labels, work)
    return final


def _optimised(checks: SourceParity, imported: Candidate, work: Path) -> Candidate:
    if checks.options.op_libraries:
        checks.notes.append(
            "kept the unoptimised graph: graphs with custom operators are not "
            "optimised offline (onnxruntime's optimiser needs their library)"
        )
        return imported
    path = work / "optimized.onnx"
    try:
        optimize.optimize_graph(imported.path, path)
        candidate = checks.checked("optimised", path, checks.options.tolerance)
    except ExportError as exc:
        checks.notes.append(f"kept the unoptimised graph: {exc}")
        return imported
    return Candidate(candidate.path, candidate.outputs, optimized=True)


def _int8(checks: SourceParity, float_graph: Candidate, labels: np.ndarray | None, work: Path) -> Candidate:
    path = work / "int8.onnx"
    precision.quantize_int8(float_graph.path, path, work)
    ops = {node.op_type for node in signature.graph_nodes(onnx.load(str(path)).graph)}
    if not ops & _QUANTIZED_OPS:
        raise ModelRefused(
            checks.source.path,
            "--quantize int8 changes nothing: the graph has no "
            "operator dynamic int8 quantisation handles (MatMul, "
            "Gemm, Conv, attention); tree ensembles and linear "
            "ONNX-ML operators stay float",
        )
    quantized = checks.checked("int8", path, checks.options.reduced_tolerance, float_outputs_only=True)
    index = _binary_probabilities(float_graph.outputs)
    if labels is None or index is None or not set(np.unique(labels)) <= {0.0, 1.0}:
        checks.notes.append(
            "int8 judged by parity alone: a metric change needs --reference with a 0/1 --label and a probability output"
        )
        return Candidate(path, quantized.outputs, float_graph.optimized)
    deltas = parity.metric_change(
        "int8",
        _positive(float_graph.outputs[index]),
        _positive(quantized.outputs[index]),
        labels,
        checks.options.max_auc_drop,
    )
    return Candidate(path, quantized.outputs, float_graph.optimized, deltas)


def _positive(probabilities: np.ndarray) -> np.ndarray:
    """The positive class's probability: the last column ([N, 2]) or the only value ([N], [N, 1])."""
    return probabilities.reshape(len(probabilities), -1)[:, -1]


def _binary_probabilities(outputs: list[np.ndarray]) -> int | None:
    """The first output holding a binary classifier's probabilities ([N], [N, 1] or [N, 2])."""
    for index, value in enumerate(outputs):
        if (
            value.dtype.kind == "f"
            and value.ndim in (1, 2)
            and value.size
            and value.reshape(len(value), -1).shape[1] <= 2
            and value.min() >= 0.0
            and value.max() <= 1.0
        ):
            return index
    return None

"""The checks' defaults both pipelines apply: parity tolerances, metric-change limits, opsets.

One table for `hotserve export` (against PyTorch) and `hotserve import` (against the original
file), so a graph published either way passed the same bar. Free of onnx/torch imports: the
command lines show these in `--help`.
"""

from __future__ import annotations

FP32_TOLERANCE = 1e-4
"""Max |onnx - torch| for a full-precision graph: only kernel rounding differs. Differences are
in probability units, or in target standard deviations for regression models."""
FP16_TOLERANCE = 1e-2
"""Half precision keeps ~3 significant digits; judged mainly by the metric change."""
INT8_TOLERANCE = 5e-2
"""Dynamic int8 quantisation moves logits; judged mainly by the metric change."""
INT8_TASK_TOLERANCE = {"binary": INT8_TOLERANCE, "multiclass": 0.1, "regression": 0.5}
"""int8's worst held-out row by task, a bound on gross breakage rather than the verdict (the
metric change is): spread-out class probabilities and an unbounded regression output (here in
target standard deviations) move more than a rare-event probability near 0 does. Measured on
the demos: 0.07 (segments) and 0.24 std (delivery) for an RMSE change of +0.5%."""
MAX_AUC_DROP = 0.01
"""Largest AUC loss on the held-out rows a reduced-precision binary model may cause."""
MAX_ACCURACY_DROP = 0.01
"""Largest accuracy loss on the held-out rows a reduced-precision multiclass model may cause."""
MAX_RMSE_INCREASE = 0.02
"""Largest relative RMSE growth on the held-out rows a reduced-precision regression model may cause."""
REGRESSION_AGREEMENT_STD = 0.1
"""A regression model's recorded agreement tolerance, in standard deviations of its target (the
training target's, or on import the reference labels'): a shadow answering within a tenth of the
target's spread of production's gives the same answer. Retrained models differ by about their
error on a row, so a tighter bound fails any retrained model, a looser one lets a real change
pass; `--agreement-tolerance` records another, in target units."""
DEFAULT_OPSET = 18
"""The torch exporter's native opset; lower ones go through the ONNX version converter."""
MIN_OPSET = 17

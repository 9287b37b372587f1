"""Model architectures by name: each maps preprocessed inputs to one logit (or one per class) per row.

`build_model` wraps a body with its preprocessing and its task's head (a `TaskModel`), so
every trained and exported module takes raw inputs and returns the task's outputs:
probabilities, class probabilities and index, or predictions. Adding an architecture is one
body class and one `ARCHITECTURES` entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from training.tabular_layer import TabularPreprocessor
from training.tabular_transform import TabularTransform
from training.tasks import ClassNames, Task, body_outputs


class MLP(nn.Module):
    """Feed-forward network over a preprocessed feature vector."""

    def __init__(self, input_dim: int, hidden: list[int], dropout: float = 0.1, outputs: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*layers)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits.squeeze(-1) if self.outputs == 1 else logits


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain Linear/matmul/softmax (exports to ONNX in any mode)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        projected: torch.Tensor = self.out(context.transpose(1, 2).reshape(batch, length, d_model))
        return projected


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder layer (attention + GELU feed-forward, both residual)."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = SelfAttention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff_dim)
        self.ff2 = nn.Linear(ff_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x)))
        out: torch.Tensor = x + self.dropout(self.ff2(F.gelu(self.ff1(self.norm2(x)))))
        return out


class SequenceTransformer(nn.Module):
    """Encoder over `[N, seq_len, token_dim]` float tokens, mean-pooled into one logit (or `outputs`).

    Built from explicit layers rather than nn.TransformerEncoder, whose inference fast
    path (fused kernels, nested tensors) is a known hazard for `torch.onnx.export`.
    """

    def __init__(
        self,
        seq_len: int,
        token_dim: int,
        d_model: int = 256,
        layers: int = 4,
        heads: int = 4,
        ff_dim: int = 512,
        dropout: float = 0.1,
        outputs: int = 1,
    ) -> None:
        super().__init__()
        self.outputs = outputs
        self.embed = nn.Linear(token_dim, d_model)
        self.position = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.norm(x).mean(dim=1))
        return logits.squeeze(-1) if self.outputs == 1 else logits


class TaskModel(nn.Module):
    """Raw inputs -> preprocessing -> body -> the task's outputs.

    Training runs the body on rows it preprocessed once, then `loss` and `scores` on the
    body's output; `forward` (what is exported) goes from raw rows to the served outputs.
    """

    def __init__(self, preprocess: nn.Module, body: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.body = body

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.body(self.preprocess(raw))
        return logits

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """What metrics read: probabilities `[N]`, class probabilities `[N, K]` or predictions `[N]`."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ProbabilityModel(TaskModel):
    """Binary: sigmoid probabilities `[N]`; trained with binary cross-entropy on 0/1 labels."""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.scores(self.logits(raw))


class ClassifierModel(TaskModel):
    """Multiclass: softmax probabilities `[N, K]` and the index of the likeliest class `[N]`
    (the exporter maps it to the class name); trained with cross-entropy on class indices."""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(raw)
        return self.scores(logits), torch.argmax(logits, dim=-1)


class RegressionModel(TaskModel):
    """Regression: predictions `[N]` in the label's units. The body predicts standardised
    targets (mean squared error on those), and `target_mean`/`target_std` undo it."""

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(self, preprocess: nn.Module, body: nn.Module, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__(preprocess, body)
        self.register_buffer("target_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(std, dtype=torch.float32))

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.target_std + self.target_mean

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits, (targets - self.target_mean) / self.target_std)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.scores(self.logits(raw))


BodyBuilder = Callable[[tuple[int, ...], dict[str, Any], int], nn.Module]
"""(input shape after preprocessing, without the batch axis; architecture kwargs; values per row) -> body."""


@dataclass(frozen=True)
class Architecture:
    """One registered architecture: what it reads and how its body is built."""

    name: str
    input_name: str
    """Name of the model's single input tensor (the ONNX input name)."""
    input_rank: int
    """Rank of a raw input batch: 2 for tabular `[N, F]`, 3 for token sequences `[N, L, D]`."""
    build_body: BodyBuilder
    default_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def tabular(self) -> bool:
        return self.input_rank == 2


def _mlp(shape: tuple[int, ...], kwargs: dict[str, Any], outputs: int) -> nn.Module:
    return MLP(input_dim=shape[0], hidden=list(kwargs["hidden"]), dropout=float(kwargs["dropout"]), outputs=outputs)


def _transformer(shape: tuple[int, ...], kwargs: dict[str, Any], outputs: int) -> nn.Module:
    return SequenceTransformer(seq_len=shape[0], token_dim=shape[1], outputs=outputs, **kwargs)


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture("mlp", "features", 2, _mlp, {"hidden": [64, 32], "dropout": 0.1}),
    "transformer": Architecture(
        "transformer",
        "tokens",
        3,
        _transformer,
        {"d_model": 256, "layers": 4, "heads": 4, "ff_dim": 512, "dropout": 0.1},
    ),
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}") from None


def resolve_kwargs(architecture: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The architecture's defaults updated by `overrides`; unknown keys are refused by name."""
    spec = get_architecture(architecture)
    unknown = sorted(set(overrides) - set(spec.default_kwargs))
    if unknown:
        raise ValueError(
            f"architecture {architecture!r} has no parameter(s) {unknown}; known: {sorted(spec.default_kwargs)}"
        )
    return {**spec.default_kwargs, **overrides}


def build_model(
    architecture: str,
    input_shape: tuple[int, ...],
    kwargs: dict[str, Any],
    transform: TabularTransform | None = None,
    task: Task = "binary",
    classes: ClassNames | None = None,
    target: tuple[float, float] = (0.0, 1.0),
) -> TaskModel:
    """Build a raw-input model with `task`'s outputs.

    `input_shape` is one raw row's shape (no batch axis). Tabular architectures need the
    fitted `transform`, whose buffers become the model's first layer. Multiclass needs its
    `classes`; regression takes the training targets' (mean, std) as `target`.
    """
    spec = get_architecture(architecture)
    if len(input_shape) + 1 != spec.input_rank:
        raise ValueError(
            f"architecture {architecture!r} reads rank-{spec.input_rank} batches; got rows of shape {list(input_shape)}"
        )
    preprocess: nn.Module
    if spec.tabular:
        if transform is None:
            raise ValueError(f"architecture {architecture!r} needs a fitted tabular transform")
        if len(transform.columns) != input_shape[0]:
            raise ValueError(f"transform expects {len(transform.columns)} columns, rows have {input_shape[0]}")
        preprocess = TabularPreprocessor(transform)
        body_shape: tuple[int, ...] = (transform.output_dim,)
    else:
        preprocess = nn.Identity()
        body_shape = input_shape
    if task == "multiclass" and (classes is None or len(classes) < 2):
        raise ValueError(f"a multiclass model needs at least 2 classes, got {classes}")
    body = spec.build_body(body_shape, resolve_kwargs(architecture, kwargs), body_outputs(task, classes))
    if task == "multiclass":
        return ClassifierModel(preprocess, body)
    if task == "regression":
        return RegressionModel(preprocess, body, *target)
    return ProbabilityModel(preprocess, body)

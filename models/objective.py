"""Single-task losses and predictions, shared by the MLP, the EmbeddingBag MLP and the ensemble.

Losses: weighted cross-entropy ``sum_i w_i l_i / sum_i w_i`` (``w`` = the batch's sample
weight; DDP padding rows have ``w = 0`` and unlabelled rows are dropped the same way),
squared error for regression targets (or for class targets with ``train.loss = "mse"``:
one output vs. the class index, or C outputs vs. the one-hot vector, mean over outputs,
no 1/2 factor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from shardtrain.core.errors import ShardtrainError
from shardtrain.models.protocol import REGRESSION, TINY, EvalOutput, Loss

LOSSES = ("auto", "cross_entropy", "mse")  # train.loss
OBJECTIVES = ("cross_entropy", "mse", "regression")


def resolve_loss(loss: str, spec: int | str) -> str:
    """The objective for ``train.loss`` on a single task of spec ``spec`` (class count or ``"regression"``)."""
    if loss not in LOSSES:
        raise ShardtrainError(f"train.loss: unknown loss {loss!r}; expected one of {list(LOSSES)}")
    if spec == REGRESSION:
        if loss == "cross_entropy":
            raise ShardtrainError("train.loss: cross_entropy needs class labels; this label is a regression target")
        return "regression"
    return "mse" if loss == "mse" else "cross_entropy"


class Objective:
    """The loss of one single-task output ``(H, B, C)``: ``kind`` (one of :data:`OBJECTIVES`) on ``outputs`` units.

    ``spec`` is the task it fits: ``"regression"``, or the class count (``outputs``; with
    ``mse`` one output unit regresses the class index of 2 classes, the course example).
    """

    def __init__(self, kind: str, outputs: int) -> None:
        if kind not in OBJECTIVES:
            raise ShardtrainError(f"model.loss: unknown objective {kind!r}; expected one of {list(OBJECTIVES)}")
        self.kind, self.outputs = kind, int(outputs)
        self.spec: int | str = REGRESSION if kind == REGRESSION else (2 if kind == "mse" and outputs == 1 else outputs)
        self.target_mean, self.target_std = 0.0, 1.0

    def set_target_scale(self, mean: float, std: float) -> None:
        """Fit a regression output in standard units: it predicts ``(y - mean) / std``, reported as ``y``.

        A raw output starts near 0 whatever the target's scale (a target around 150
        costs many steps just to reach its mean); in standard units every target starts
        at its training mean. The loss is then the squared error in standard units;
        predictions and the MSE/RMSE/MAE metrics stay in the target's own units.
        """
        if self.kind != REGRESSION:
            raise ShardtrainError("model: a target scale applies to regression objectives only")  # internal
        self.target_mean, self.target_std = float(mean), float(std) if std and std > 0 else 1.0

    def target(self, y: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The ``(B,)`` target (a one-entry ``{task: y}`` is unwrapped); regression targets as float."""
        if isinstance(y, Mapping):
            (y,) = y.values()
        return y.float() if self.kind == REGRESSION else y

    def valid(self, y: torch.Tensor) -> torch.Tensor:
        """Labelled rows ``(B,)``: class >= 0, or a non-NaN regression target."""
        return ~torch.isnan(y) if self.kind == REGRESSION else y >= 0

    def per_sample(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-head, per-sample loss ``(H, B)`` of outputs ``(H, B, C)``; unlabelled rows get 0."""
        h, b, c = out.shape
        valid = self.valid(y)
        if self.kind == REGRESSION:
            per = (out[..., 0] - (torch.nan_to_num(y.float()) - self.target_mean) / self.target_std).square()
        elif self.kind == "cross_entropy":
            self.check_outputs(c)
            per = F.cross_entropy(out.reshape(h * b, c), y.clamp_min(0).expand(h, b).reshape(-1), reduction="none").view(h, b)
        elif c == 1:  # mse on one output unit: the output regresses the class index (course example)
            per = (out[..., 0] - y.clamp_min(0).to(out.dtype)).square()
        else:
            per = (out - F.one_hot(y.clamp_min(0), c).to(out.dtype)).square().mean(-1)
        return torch.where(valid, per, 0.0)

    def check_outputs(self, c: int) -> None:
        """Cross-entropy needs one output per class (at least 2)."""
        if c < 2:
            raise ShardtrainError(f"model: {c} output(s) cannot give class probabilities with cross_entropy")

    def probs(self, out: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(H, B, classes)``: softmax for cross-entropy; for mse the clamped scores."""
        if self.kind == "cross_entropy":
            return torch.softmax(out, -1)
        if out.shape[-1] == 1:
            p = out[..., 0].clamp(0.0, 1.0)
            return torch.stack([1.0 - p, p], -1)
        s = out.clamp_min(0.0)
        return s / s.sum(-1, keepdim=True).clamp_min(TINY)

    def pred(self, out: torch.Tensor) -> torch.Tensor:
        """What the metrics see: ``(H, B)`` regression outputs or ``(H, B, C)`` probabilities."""
        if self.kind == REGRESSION:
            return out[..., 0] * self.target_std + self.target_mean
        return self.probs(out)


def weighted_mean(per: torch.Tensor, w: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``sum(per * w') / sum(w')`` with ``w' = w`` on labelled rows, 0 elsewhere; ``per`` is ``(..., B)``."""
    wv = torch.where(valid, w, 0.0)  # (B,)
    return (per * wv).sum() / wv.sum().clamp_min(TINY)


class SingleTaskModel:
    """Mixin giving a one-output-per-batch ``nn.Module`` (``forward(x) -> (B, C)``) the model protocol.

    The subclass sets ``self.objective`` (an :class:`Objective`); its one task is ``"label"``.
    """

    objective: Objective
    metric_heads = 1

    @property
    def tasks(self) -> dict[str, int | str]:
        """``{"label": class count | "regression"}``."""
        return {"label": self.objective.spec}

    def loss(self, batch: Mapping[str, Any]) -> Loss:
        """Weighted loss of ``batch`` (see the module docstring)."""
        obj = self.objective
        y = obj.target(batch["y"])
        out = self(batch["x"])  # (B, C)
        if obj.kind != "cross_entropy":
            return Loss(weighted_mean(obj.per_sample(out[None], y), batch["w"], obj.valid(y)))
        # The common case in as few autograd nodes as possible (per batch-64 step on a
        # 2-core CPU this took ours/hand-loop from 1.18 to 1.10); the same value as above.
        obj.check_outputs(out.shape[-1])
        hit = out.argmax(-1) == y  # (B,) the train accuracy's counts (no autograd node), summed by the shell
        if batch.get("unit_weights") is True:  # the DataModule vouches: every w == 1, every row labelled
            return Loss(F.cross_entropy(out, y), {"train_correct": hit.sum(), "train_count": y.shape[0]})
        per = F.cross_entropy(out, y, ignore_index=-1, reduction="none")  # (B,), 0 where unlabelled
        wv = batch["w"] * (y >= 0)  # (B,) unlabelled rows weigh nothing
        total = wv.sum()
        return Loss((per * wv).sum() / total.clamp_min(TINY),
                    {"train_correct": (hit * wv).sum(), "train_count": total.detach()})

    def predict(self, x: Any) -> dict[str, torch.Tensor]:
        """``{"label": (B, C) probabilities | (B,) regression outputs}``."""
        return {"label": self.objective.pred(self(x)[None])[0]}

    def eval_outputs(self, batch: Mapping[str, Any]) -> dict[str, EvalOutput]:
        """The one head's predictions, targets and per-sample losses."""
        y = self.objective.target(batch["y"])
        out = self(batch["x"])[None]  # (1, B, C)
        return {"label": EvalOutput(self.objective.pred(out), y, self.objective.per_sample(out, y))}

    def training_metrics(self, stats: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        """No training-epoch metrics beyond the loss."""
        return {}

    def summarize(self, reports: Mapping[str, list[dict]]) -> tuple[dict[str, Any], dict[str, float | None]]:
        """The flat report of the one task; logs ``loss`` and ``accuracy``."""
        (heads,) = reports.values()
        result = dict(heads[0])
        return result, {"accuracy": result.get("accuracy"), "loss": result["loss"]}

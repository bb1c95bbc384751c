"""A shared trunk with one Linear head per task, and the masked, weighted multitask loss.

Missing labels: a classification target of ``-1`` or a regression target of ``NaN``
removes that (sample, task) pair from the task's loss (selected out with ``torch.where``
and given weight 0), so it contributes exactly zero gradient to every parameter; a task
with no labelled sample in a batch contributes a loss of exactly 0.

Task weighting (``weighting``):

- ``"equal"``: ``L = sum_t L_t``.
- ``"static"``: ``L = sum_t c_t L_t`` with ``c_t = static_weights[t]`` (default 1.0).
- ``"uncertainty"`` (Kendall, Gal & Cipolla 2018), learned ``s_t = log sigma_t**2``:
  classification ``exp(-s_t) L_t + s_t / 2``, regression ``exp(-s_t) L_t / 2 + s_t / 2``,
  i.e. the paper's ``1/sigma**2`` (classification) and ``1/(2 sigma**2)`` (regression)
  weights with the ``log sigma`` regulariser; ``s_t`` starts at 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from shardtrain.core.errors import ShardtrainError
from shardtrain.models.protocol import REGRESSION, EvalOutput, Loss
WEIGHTINGS = ("equal", "static", "uncertainty")


def per_sample_task_loss(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss ``(B,)`` and labelled mask ``(B,)`` of one task.

    ``output`` ``(B, C)`` logits with int64 ``target`` ``(B,)`` (``-1`` = missing) gives
    cross-entropy; ``output`` ``(B,)`` with float ``target`` (``NaN`` = missing) gives
    squared error. Unlabelled rows get loss 0 via ``torch.where`` (zero gradient).
    """
    if target.dtype.is_floating_point:
        mask = ~torch.isnan(target)  # (B,)
        per_sample = (output - torch.where(mask, target, torch.zeros_like(target))).square()
    else:
        mask = target >= 0
        per_sample = F.cross_entropy(output, target.clamp_min(0), reduction="none")  # (B,)
    return torch.where(mask, per_sample, torch.zeros_like(per_sample)), mask


def masked_task_loss(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean loss of one task over its labelled samples (0.0 when none are labelled).

    ``weight`` ``(B,)`` is the sample weight (0 for DDP padding rows). Returns
    ``sum_i w_i m_i l_i / sum_i w_i m_i`` with ``m_i`` the labelled mask and ``l_i`` from
    :func:`per_sample_task_loss`.
    """
    per_sample, mask = per_sample_task_loss(output, target)
    w = torch.where(mask, weight, torch.zeros_like(weight))  # (B,)
    return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


class MultiTaskMLP(nn.Module):
    """A shared ``trunk`` (features -> ``(B, trunk_out)``) feeding one Linear head per task.

    ``heads`` maps task name to its class count (a classification head of that width)
    or to ``"regression"`` (a one-unit head whose output is squeezed to ``(B,)``).
    ``forward`` returns ``{task: output}``; :meth:`task_losses` combines the tasks' masked
    losses according to ``weighting`` (see the module docstring) and :meth:`loss` applies
    it to a batch, whose ``y`` is ``{task | "label_<task>": (B,)}``.

    Example::

        >>> m = MultiTaskMLP(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), 8, {"a": 3, "b": "regression"})
        >>> {k: v.shape for k, v in m(torch.zeros(2, 4)).items()}
        {'a': torch.Size([2, 3]), 'b': torch.Size([2])}
    """

    def __init__(
        self,
        trunk: nn.Module,
        trunk_out: int,
        heads: Mapping[str, int | str],
        weighting: str = "equal",
        static_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not heads:
            raise ShardtrainError("model: a multitask model needs at least one task head")
        if weighting not in WEIGHTINGS:
            raise ShardtrainError(f"model.task_weighting: unknown weighting {weighting!r}; expected one of {list(WEIGHTINGS)}")
        static_weights = dict(static_weights or {})
        unknown = sorted(set(static_weights) - set(heads))
        if unknown:
            raise ShardtrainError(f"model.task_weights: unknown task(s) {unknown}; tasks are {sorted(heads)}")
        for task, spec in heads.items():
            if spec != REGRESSION and not (isinstance(spec, int) and spec >= 2):
                raise ShardtrainError(f"labels.{task}: head must be a class count >= 2 or 'regression', got {spec!r}")
        self.trunk = trunk
        self.tasks: dict[str, int | str] = dict(heads)
        self.weighting = weighting
        self.head = nn.ModuleDict(
            {t: nn.Linear(trunk_out, 1 if spec == REGRESSION else int(spec)) for t, spec in heads.items()}
        )
        self.register_buffer(
            "static_weights", torch.tensor([float(static_weights.get(t, 1.0)) for t in heads]), persistent=False
        )
        # Learned log-variances s_t, one per task (only a parameter when used, so that
        # DDP does not see an unused parameter).
        self.log_vars = nn.Parameter(torch.zeros(len(heads))) if weighting == "uncertainty" else None
        # Kendall et al.'s factor on exp(-s_t) L_t: 1 for classification, 1/2 for regression.
        scale = [0.5 if spec == REGRESSION else 1.0 for spec in heads.values()]
        self.register_buffer("uncertainty_scale", torch.tensor(scale), persistent=False)

    metric_heads = 1

    def is_regression(self, task: str) -> bool:
        """Whether ``task`` has a regression head."""
        return self.tasks[task] == REGRESSION

    def forward(self, x: object) -> dict[str, torch.Tensor]:
        """``{task: (B, C) logits or (B,) regression output}`` for a batch ``x``."""
        h = self.trunk(x)  # (B, trunk_out)
        return {t: (head(h).squeeze(-1) if self.is_regression(t) else head(h)) for t, head in self.head.items()}

    def targets(self, y: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{task: (B,)}`` from a batch's ``y`` (keys ``<task>`` or ``label_<task>``); regression targets as float."""
        if not isinstance(y, Mapping):
            y = {next(iter(self.tasks)): y}
        out = {}
        for t in self.tasks:
            value = y.get(t, y.get(f"label_{t}"))
            if value is None:
                raise ShardtrainError(f"batch.y: no targets for task {t!r} (batch has {sorted(y)})")
            out[t] = value.float() if self.is_regression(t) else value
        return out

    def loss(self, batch: Mapping[str, Any]) -> Loss:
        """The weighted total of :meth:`task_losses` over a batch (masked labels, sample weights ``w``)."""
        outs, ys = self(batch["x"]), self.targets(batch["y"])
        total, _ = self.task_losses(outs, ys, batch["w"])
        # Per-task correct/count sums, so multitask runs get train accuracy curves too.
        stats = {}
        with torch.no_grad():
            for t in self.tasks:
                if not self.is_regression(t):
                    wv = batch["w"] * (ys[t] >= 0)
                    stats[f"train_correct_{t}"] = ((outs[t].argmax(-1) == ys[t]) * wv).sum()
                    stats[f"train_count_{t}"] = wv.sum()
        return Loss(total, stats)

    def predict(self, x: Any) -> dict[str, torch.Tensor]:
        """``{task: (B, C) softmax probabilities | (B,) regression output}``."""
        outs = self(x)
        return {t: out if self.is_regression(t) else torch.softmax(out, -1) for t, out in outs.items()}

    def eval_outputs(self, batch: Mapping[str, Any]) -> dict[str, EvalOutput]:
        """Per task: predictions, targets and the unweighted per-sample loss (one metric head)."""
        outs, ys = self(batch["x"]), self.targets(batch["y"])
        result = {}
        for t in self.tasks:
            per, _ = per_sample_task_loss(outs[t], ys[t])
            pred = outs[t] if self.is_regression(t) else torch.softmax(outs[t], -1)
            result[t] = EvalOutput(pred[None], ys[t], per[None])
        return result

    def training_metrics(self, stats: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        """No training-epoch metrics beyond the loss."""
        return {}

    def summarize(self, reports: Mapping[str, list[dict]]) -> tuple[dict[str, Any], dict[str, float | None]]:
        """``{task: report}`` (with ``log_variance`` under uncertainty weighting); logs the summed loss."""
        result = {t: dict(r[0]) for t, r in reports.items()}
        if self.log_vars is not None:
            for t, s in zip(self.tasks, self.log_vars.detach().tolist()):
                result[t]["log_variance"] = s
        losses = [r["loss"] for r in result.values() if r["loss"] is not None]
        scalars: dict[str, float | None] = {f"{t}_accuracy": r.get("accuracy") for t, r in result.items()}
        scalars["loss"] = sum(losses) if losses else None
        return result, scalars

    def task_losses(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], weights: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total weighted loss (scalar) and the raw per-task losses ``{task: scalar}``.

        ``targets`` holds one ``(B,)`` tensor per task (``-1`` / ``NaN`` = missing) and
        ``weights`` the ``(B,)`` sample weights. The raw per-task losses are what metrics
        and early stopping should look at; the total is what the optimizer minimises.
        """
        missing = sorted(set(self.tasks) - set(targets))
        if missing:
            raise ShardtrainError(f"batch.y: no targets for task(s) {missing}")
        raw = {t: masked_task_loss(outputs[t], targets[t], weights) for t in self.tasks}
        stacked = torch.stack([raw[t] for t in self.tasks])  # (T,)
        if self.weighting == "equal":
            return stacked.sum(), raw
        if self.weighting == "static":
            return (self.static_weights * stacked).sum(), raw
        assert self.log_vars is not None
        weighted = self.uncertainty_scale * torch.exp(-self.log_vars) * stacked
        return (weighted + 0.5 * self.log_vars).sum(), raw

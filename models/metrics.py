"""Evaluation metrics as DDP-aware ``torchmetrics.Metric`` states plus pure reports.

A summary metric accumulates, for ``H`` heads at once (1 for a plain model; for a
bagging ensemble the ensemble plus its ``K`` members), everything the reports need:
a confusion matrix, coverage counts and the weighted loss. ``torchmetrics`` sums the
states across DDP ranks when ``compute()`` is called (at epoch end), and the
``*_report`` functions turn the summed states into JSON-ready dicts.

Only rows with a label (target ``>= 0``, or not ``NaN`` for regression) and a
non-zero sample weight (DDP padding rows have 0) are counted; counts are
unweighted, the loss is weighted by the sample weight.
Confusion matrices are ``[true][predicted]`` (sklearn's and torchmetrics' order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric


class ClassificationSummary(Metric):
    """Confusion matrix ``(H, C, C)``, coverage counts and loss sums for ``H`` classifier heads."""

    full_state_update = False

    def __init__(self, num_classes: int, heads: int = 1, threshold: float = 0.9) -> None:
        super().__init__()
        self.num_classes, self.heads, self.threshold = int(num_classes), int(heads), float(threshold)
        h, c = self.heads, self.num_classes
        self.add_state("confmat", torch.zeros(h, c, c, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("covered", torch.zeros(h, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("covered_correct", torch.zeros(h, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("loss_sum", torch.zeros(h, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight_sum", torch.zeros(h, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, loss: torch.Tensor) -> None:
        """Add a batch: ``probs`` ``(H, B, C)``, ``target`` ``(B,)`` (-1 = none), ``weight`` ``(B,)``, ``loss`` ``(H, B)``."""
        h, c = self.heads, self.num_classes
        valid = (target >= 0) & (weight > 0)  # (B,)
        top, pred = probs.max(-1)  # (H, B) each
        cell = torch.where(valid, target.clamp_min(0) * c, c * c)[None, :] + torch.where(valid, pred, 0)  # (H, B)
        cell = cell + torch.arange(h, device=cell.device)[:, None] * (c * c + 1)  # per head: C*C cells + 1 "invalid"
        counts = torch.bincount(cell.flatten(), minlength=h * (c * c + 1)).view(h, c * c + 1)
        self.confmat += counts[:, : c * c].view(h, c, c)
        covered = valid & (top >= self.threshold)  # (H, B)
        self.covered += covered.sum(1)
        self.covered_correct += (covered & (pred == target)).sum(1)
        w = torch.where(valid, weight, 0.0).to(torch.float64)  # (B,)
        self.loss_sum += (torch.where(valid, loss, 0.0).to(torch.float64) * w).sum(1)
        self.weight_sum += w.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """The summed states (synced across ranks by torchmetrics)."""
        return {k: getattr(self, k).clone() for k in ("confmat", "covered", "covered_correct", "loss_sum", "weight_sum")}


class RegressionSummary(Metric):
    """Squared/absolute error sums, counts and loss sums for ``H`` regression heads."""

    full_state_update = False

    def __init__(self, heads: int = 1) -> None:
        super().__init__()
        self.heads = int(heads)
        for name in ("sse", "sae", "count", "loss_sum", "weight_sum"):
            self.add_state(name, torch.zeros(self.heads, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, loss: torch.Tensor) -> None:
        """Add a batch: ``pred`` ``(H, B)``, ``target`` ``(B,)`` (NaN = none), ``weight`` ``(B,)``, ``loss`` ``(H, B)``."""
        valid = ~torch.isnan(target) & (weight > 0)  # (B,)
        err = torch.where(valid, pred - torch.nan_to_num(target), 0.0).to(torch.float64)  # (H, B)
        self.sse += err.square().sum(1)
        self.sae += err.abs().sum(1)
        self.count += valid.sum().to(torch.float64)
        w = torch.where(valid, weight, 0.0).to(torch.float64)
        self.loss_sum += (torch.where(valid, loss, 0.0).to(torch.float64) * w).sum(1)
        self.weight_sum += w.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """The summed states (synced across ranks by torchmetrics)."""
        return {k: getattr(self, k).clone() for k in ("sse", "sae", "count", "loss_sum", "weight_sum")}


def _ratio(num: float, den: float) -> float | None:
    """``num / den``, or ``None`` (JSON null) when nothing was counted."""
    return float(num) / float(den) if den > 0 else None


def classification_report(
    confmat: np.ndarray, covered: int, covered_correct: int, loss_sum: float, weight_sum: float,
    class_names: Sequence[str],
) -> dict:
    """JSON-ready metrics of one classifier from its ``(C, C)`` ``[true][pred]`` confusion matrix.

    Keys: ``samples, loss, accuracy, precision_macro, recall_macro, f1_macro, mcc,
    coverage, coverage_accuracy, confusion_matrix, recall_per_class``, and for two
    classes also ``precision_<pos>, recall_<pos>, f1_<pos>`` (``pos`` = name of class 1).
    Per-class precision/recall/F1 with a zero denominator count as 0 (sklearn's
    ``zero_division=0``); macro averages run over all classes. ``mcc`` is the
    multiclass Matthews correlation (Gorodkin's R_K, as in sklearn), for any C.
    """
    cm = np.asarray(confmat, dtype=np.int64)
    total, correct = int(cm.sum()), int(np.trace(cm))
    true_n, pred_n, tp = cm.sum(1).astype(float), cm.sum(0).astype(float), np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_n > 0, tp / pred_n, 0.0)
        recall = np.where(true_n > 0, tp / true_n, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    cov_tp = float(correct) * total - float(true_n @ pred_n)
    denom = np.sqrt((float(total) ** 2 - float(pred_n @ pred_n)) * (float(total) ** 2 - float(true_n @ true_n)))
    report = {
        "samples": total,
        "loss": _ratio(loss_sum, weight_sum),
        "accuracy": _ratio(correct, total),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "mcc": float(cov_tp / denom) if denom > 0 else 0.0,
        "coverage": _ratio(covered, total),
        "coverage_accuracy": _ratio(covered_correct, covered),
        "confusion_matrix": cm.tolist(),
        "recall_per_class": {str(name): float(r) for name, r in zip(class_names, recall)},
    }
    if len(class_names) == 2:
        pos = str(class_names[1])
        report.update({f"precision_{pos}": float(precision[1]), f"recall_{pos}": float(recall[1]), f"f1_{pos}": float(f1[1])})
    return report


def regression_report(sse: float, sae: float, count: float, loss_sum: float, weight_sum: float) -> dict:
    """JSON-ready metrics of one regression head: ``samples, loss, mse, rmse, mae``."""
    mse = _ratio(sse, count)
    return {
        "samples": int(count),
        "loss": _ratio(loss_sum, weight_sum),
        "mse": mse,
        "rmse": float(np.sqrt(mse)) if mse is not None else None,
        "mae": _ratio(sae, count),
    }


def summary_reports(metric: Metric, class_names: Sequence[str] | None) -> list[dict]:
    """``compute()`` a summary (a DDP sync: call it on every rank) and return one report per head."""
    # torchmetrics squeezes one-element results, so restore each state's (H, ...) shape
    state = {k: v.cpu().numpy().reshape(getattr(metric, k).shape) for k, v in metric.compute().items()}
    heads = range(metric.heads)
    if isinstance(metric, RegressionSummary):
        return [regression_report(*(state[k][h] for k in ("sse", "sae", "count", "loss_sum", "weight_sum"))) for h in heads]
    assert class_names is not None
    keys = ("confmat", "covered", "covered_correct", "loss_sum", "weight_sum")
    return [classification_report(*(state[k][h] for k in keys), class_names=class_names) for h in heads]

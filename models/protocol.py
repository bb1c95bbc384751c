"""What a shardtrain model promises the training shell: its tasks, its loss, its predictions.

A model is a plain ``nn.Module`` that also answers the few questions the LightningModule
(``shardtrain.training.module``) asks, so the shell never branches on what kind of model
it holds. A batch is the DataModule's dict: ``x`` (dense ``(B, *shape)`` tensor or a
:class:`~shardtrain.models.inputs.SparseBatch`), ``y`` (``(B,)`` targets, or
``{task: (B,)}``; ``-1`` / ``NaN`` = missing), ``w`` (``(B,)`` sample weights, 0 for DDP
padding rows), ``sample_id`` / ``source_id`` (``(B,)`` int64) and optionally
``unit_weights`` (``True`` when every ``w`` is 1 and every row is labelled).

``REGRESSION`` is the task spec of a regression target (a class count otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

REGRESSION = "regression"
TINY = torch.finfo(torch.float32).tiny  # the clamp of a weight sum: an all-padding batch gives loss 0, not NaN


class Loss(NamedTuple):
    """What :meth:`SupervisedModel.loss` returns: the value to minimise and on-device epoch statistics.

    ``stats`` holds tensors the shell sums over an epoch's steps and across DDP ranks,
    then hands back to :meth:`SupervisedModel.training_metrics` (bagging's out-of-bag
    counts); reading them never syncs with the host during training. ``train_correct``
    and ``train_count`` (a tensor or a Python number), when given, make the shell log
    the epoch's train accuracy as their ratio.
    """

    value: torch.Tensor  # scalar, penalties (train.l1 / l2) excluded: the shell adds those
    stats: Mapping[str, torch.Tensor] = {}  # never mutated; {} for most models


class EvalOutput(NamedTuple):
    """One task's evaluation inputs for a batch, for ``H`` metric heads (see ``models.metrics``)."""

    pred: torch.Tensor  # (H, B, C) class probabilities or (H, B) regression outputs
    target: torch.Tensor  # (B,) int64 classes (-1 = missing) or float (NaN = missing)
    loss: torch.Tensor  # (H, B) per-sample loss, 0 where unlabelled


@runtime_checkable
class SupervisedModel(Protocol):
    """The methods the LightningModule shell calls; every ``shardtrain.models`` network has them.

    ``tasks`` is ``{task: class count | "regression"}`` (single-task models call their
    task ``"label"``, the shard column's name); it must equal what the shard index's labels
    describe. ``metric_heads`` is how many sets of metrics each task gets (1; a bagging
    ensemble: the ensemble plus each member).
    """

    tasks: Mapping[str, int | str]
    metric_heads: int

    def loss(self, batch: Mapping[str, Any]) -> Loss:
        """The weighted training loss of one batch (honours ``w``, missing labels, bootstrap weights)."""
        ...

    def predict(self, x: Any) -> dict[str, torch.Tensor]:
        """``{task: (B, C) class probabilities | (B,) regression outputs}`` for features ``x``."""
        ...

    def eval_outputs(self, batch: Mapping[str, Any]) -> dict[str, EvalOutput]:
        """Per task, the predictions, targets and per-sample losses the metrics accumulate."""
        ...

    def training_metrics(self, stats: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        """JSON-ready training-epoch metrics from the summed ``Loss.stats`` (``None``: no epoch yet)."""
        ...

    def summarize(self, reports: Mapping[str, list[dict]]) -> tuple[dict[str, Any], dict[str, float | None]]:
        """``(metrics, scalars)`` from per-task, per-head reports: the JSON result and the values to log.

        ``scalars`` names are unprefixed (``"loss"``, ``"accuracy"``); the shell logs them
        as ``<split>_<name>``.
        """
        ...

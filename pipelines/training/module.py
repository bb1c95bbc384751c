"""The one LightningModule: a thin shell that trains any ``shardtrain.models`` network.

The model owns its loss and predictions (``shardtrain.models.protocol``): the shell calls
``model.loss(batch)``, ``model.eval_outputs(batch)`` and ``model.predict(x)`` and never asks
what kind of model it holds. It adds the ``train.l1`` / ``l2`` penalties and wires in the
optimizer and schedule (``shardtrain.training.optim``), the grouped optimizer steps
(``train.steps_per_call``, ``shardtrain.training.steps``), dropout seeding per (seed, rank,
step) and the DDP weight check (``shardtrain.training.determinism``).

Hot path: ``training_step`` never syncs with the host. The loss goes to the loggers
only when a call passes a multiple of ``train.log_every_n_steps`` *optimizer* steps (as
``train_loss_step`` at ``global_step``; not on the progress bar, which would convert it to
a float every step); epoch means and the model's epoch statistics (``Loss.stats``: e.g.
out-of-bag counts, and ``train_correct`` / ``train_count`` for the train accuracy) are
accumulated on the device and reduced once per epoch, when :meth:`epoch_row` sends the
loggers one row per epoch (``shardtrain.training.loggers``). Metrics are computed only in validation/test (DDP-synced
``torchmetrics`` states, see ``shardtrain.models.metrics``) and come back as JSON-ready
dicts from :meth:`ShardTrainModule.metrics_dict`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from shardtrain.core.errors import ShardtrainError
from shardtrain.models.build import task_specs
from shardtrain.models.metrics import ClassificationSummary, RegressionSummary, summary_reports
from shardtrain.models.protocol import REGRESSION, Loss
from shardtrain.training import determinism, optim
from shardtrain.training.steps import GroupedSteps

SPLITS = ("val", "test")


def with_mean_accuracy(scalars: Mapping[str, float | None]) -> dict[str, float | None]:
    """``scalars`` with ``accuracy``: the mean of the per-task ``<task>_accuracy`` when the model gives none.

    A multitask model reports each classification task's accuracy; their mean is what
    ``train.monitor: val_accuracy`` follows (regression tasks, None there, are left out).
    """
    out = dict(scalars)
    if out.get("accuracy") is None:
        tasks = [float(v) for k, v in out.items() if k.endswith("_accuracy") and v is not None]
        if tasks:
            out["accuracy"] = sum(tasks) / len(tasks)
    return out


def train_accuracies(stats: Mapping[str, torch.Tensor]) -> tuple[float | None, dict[str, float]]:
    """``(train accuracy, {task: accuracy})`` from an epoch's summed ``Loss.stats``.

    ``train_correct`` / ``train_count`` give the accuracy; ``train_correct_<task>`` /
    ``train_count_<task>`` (multitask models) give each task's, and their mean is the
    accuracy when there is no overall count.
    """
    def ratio(correct: torch.Tensor, count: torch.Tensor) -> float:
        return float(correct.sum() / count.sum().clamp_min(1))

    per_task = {name[len("train_correct_"):]: ratio(value, stats[f"train_count_{name[len('train_correct_'):]}"])
                for name, value in stats.items()
                if name.startswith("train_correct_") and f"train_count_{name[len('train_correct_'):]}" in stats}
    correct, count = stats.get("train_correct"), stats.get("train_count")
    if correct is not None and count is not None:
        return ratio(correct, count), per_task
    return (sum(per_task.values()) / len(per_task) if per_task else None), per_task

def class_weight_tables(weights: Mapping[str, float], tasks: Mapping[str, Any],
                        class_names: Mapping[str, list[str] | None]) -> dict[str, torch.Tensor]:
    """``train.class_weights`` as one ``(C,)`` weight table per task that names a class (unnamed classes 1).

    Keys are ``"<task>:<class>"``, or ``"<class>"`` when there is one task; a key naming no
    classification task or no class of it is a one-line error that lists what exists.
    """
    tables: dict[str, torch.Tensor] = {}
    single = next(iter(tasks)) if len(tasks) == 1 else None
    for key, value in weights.items():
        task, _, name = key.rpartition(":")
        task = task or single
        if task not in tasks or tasks[task] == REGRESSION or not class_names.get(task):
            known = [t for t, spec in tasks.items() if spec != REGRESSION]
            raise ShardtrainError(f"train.class_weights: {key!r} names no classification task (keys are "
                                  f"'<task>:<class>', tasks {known})")
        names = list(class_names[task] or [])
        if name not in names:
            raise ShardtrainError(f"train.class_weights: {key!r}: task {task!r} has no class {name!r} (classes {names})")
        table = tables.setdefault(task, torch.ones(len(names)))
        table[names.index(name)] = float(value)
    return tables


def weighted_by_class(batch: Mapping[str, Any], tables: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``batch`` with ``w`` multiplied by each row's class weight (per task; unlabelled rows keep theirs)."""
    y = batch["y"]
    w = batch["w"]
    for task, table in tables.items():
        target = y[f"label_{task}"] if isinstance(y, Mapping) and f"label_{task}" in y else (
            y[task] if isinstance(y, Mapping) else y)
        table = table.to(w.device, w.dtype)
        w = w * torch.where(target >= 0, table[target.clamp_min(0)], torch.ones_like(w))
    # The weights are no longer all 1: the model must take the weighted mean.
    return {**batch, "w": w, "unit_weights": False}


class ShardTrainModule(pl.LightningModule):
    """Lightning shell around a model that follows ``shardtrain.models.protocol``; batches are the DataModule's dicts.

    ``labels`` is the shard index's label description (``{"label": {"classes": [...]}}`` or
    ``{"label_<task>": {...}}``); the model's ``tasks`` must match it. On-device batch
    augmentation is the DataModule's (``ShardDataModule(batch_augment=...)``), not the shell's.
    """

    def __init__(self, model: nn.Module, model_cfg: Any, train_cfg: Any, eval_cfg: Any,
                 labels: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__()
        self.automatic_optimization = False  # GroupedSteps steps the optimizer itself, once per batch
        self.model, self.model_cfg, self.train_cfg, self.eval_cfg = model, model_cfg, train_cfg, eval_cfg
        self.tasks = task_specs(labels)  # {task: n_classes | "regression"}
        if dict(model.tasks) != self.tasks:
            hint = "; several label columns need model.kind=multitask" if len(self.tasks) > 1 else ""
            raise ShardtrainError(f"labels: the model's tasks {dict(model.tasks)} do not match the label tasks "
                                  f"{self.tasks}{hint}")
        self.class_names = {t: None if d.get("classes") is None else [str(c) for c in d["classes"]]
                            for t, d in zip(self.tasks, labels.values())}
        threshold = float(getattr(eval_cfg, "coverage_threshold", 0.9))
        heads = int(model.metric_heads)
        self.summaries = nn.ModuleDict({
            f"{split}__{t}": RegressionSummary(heads) if spec == REGRESSION else ClassificationSummary(spec, heads, threshold)
            for split in SPLITS for t, spec in self.tasks.items()
        })
        self.l1, self.l2 = float(getattr(train_cfg, "l1", 0.0)), float(getattr(train_cfg, "l2", 0.0))
        self.stepper = GroupedSteps(float(getattr(train_cfg, "gradient_clip_norm", 0.0)))
        self._results: dict[str, dict[str, Any]] = {}  # per split: the model's summarized metrics
        self._train_metrics: dict[str, Any] | None = None  # model.training_metrics of the last training epoch
        self._acc: dict[str, torch.Tensor] | None = None  # on-device training accumulators
        self._steps = 0
        self._epoch_val: dict[str, float] = {}  # the validation scalars of this training epoch
        self._row: dict[str, Any] | None = None  # epoch_row's cache for the current epoch
        self.ranks_agree: bool | None = None  # set after a DDP fit: every rank ended with the same weights
        self.seed = int(getattr(model_cfg, "seed", 0))  # the train stage sets the run's seed
        self._uses_dropout = determinism.uses_dropout(model, model_cfg)
        self.class_weights = class_weight_tables(getattr(train_cfg, "class_weights", None) or {},
                                                 self.tasks, self.class_names)

    @property
    def lean_steps(self) -> bool:
        """Whether optimizer steps skip Lightning's per-step hook dispatch (decided in ``on_train_start``)."""
        return self.stepper.lean

    # ----------------------------------------------------------------- training
    def training_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The model's loss + penalties of one batch; adds to the epoch's on-device statistics, no host syncs."""
        if self.class_weights:
            batch = weighted_by_class(batch, self.class_weights)
        out = self.model.loss(batch)
        loss, stats = (out.value, out.stats) if isinstance(out, Loss) else (out, {})  # a plain tensor is fine too
        penalty = optim.penalty(self.model, self.l1, self.l2)
        if not isinstance(penalty, float):  # 0.0 when there is none: no extra autograd node
            loss = loss + penalty
        if self._acc is None:
            self._acc, self._steps = {"loss_sum": torch.zeros((), device=loss.device)}, 0
        self._acc["loss_sum"] += loss.detach()
        for name, value in stats.items():
            if name in self._acc:
                self._acc[name] += value
            elif isinstance(value, torch.Tensor):  # float: counts of int and float batches may mix
                self._acc[name] = value.detach().to(torch.float32, copy=True)
            else:  # a Python number stays one (no device op per step)
                self._acc[name] = value
        self._steps += 1
        return loss

    def _seeded_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if self._uses_dropout:
            determinism.seed_dropout(self.device, self.seed, self.global_rank, self.global_step)
        return self.training_loss(batch)

    def training_step(self, batch: Mapping[str, Any] | list[Mapping[str, Any]], batch_idx: int) -> torch.Tensor:
        """One optimizer step per batch; ``batch`` is a batch dict or a list of them. Returns the last loss."""
        batches = [batch] if isinstance(batch, Mapping) else batch
        before = self.global_step
        loss = self.stepper.run(self, batches, self._seeded_loss)
        if self._logs_step(before):
            step = self.global_step
            for lg in self.loggers:  # one host sync, every log_every_n_steps optimizer steps
                lg.log_metrics({"train_loss_step": float(loss.detach())}, step=step)
        return loss.detach()

    def _logs_step(self, before: int) -> bool:
        """Whether this call's optimizer steps passed a multiple of ``train.log_every_n_steps`` (rank 0, loggers on)."""
        n = int(getattr(self.train_cfg, "log_every_n_steps", 0) or 0)
        if self._trainer is None or n <= 0 or not self.trainer.is_global_zero or not self.loggers:
            return False
        return self.global_step // n > before // n

    def on_train_start(self) -> None:
        """Sort the LR schedules by interval and pick the lean step path (``GroupedSteps.start``).

        A resumed one-cycle schedule must have the length this fit needs; checked here, after
        Lightning restored it and before any step (``optim.check_resumed_schedule``).
        """
        optim.check_resumed_schedule(self.trainer, self.train_cfg)
        self.stepper.start(self)

    def on_train_epoch_start(self) -> None:
        """Start fresh on-device accumulators; bring per-epoch LR schedules to this epoch."""
        self._acc, self._row, self._epoch_val = None, None, {}
        self.stepper.epoch_start(self.current_epoch)

    def epoch_row(self) -> dict[str, Any]:
        """This training epoch's row (computed once; DDP-reduced): what the loggers and ``epochs.csv`` get.

        ``{"epoch": epochs done, "step": optimizer steps, "train_loss", "train_accuracy"
        (None without ``train_correct`` stats), "val_loss", "val_accuracy" (None without
        validation), "lr"}``. Called from ``on_train_epoch_end`` (here and by the
        ``EpochRecord`` callback, whichever runs first).
        """
        if self._row is not None:
            return self._row
        if self._acc is None:
            self._acc, self._steps = {"loss_sum": torch.zeros((), device=self.device)}, 0
        acc, strategy = self._acc, self.trainer.strategy
        mean_loss = strategy.reduce(acc["loss_sum"] / max(1, self._steps), reduce_op="mean")
        stats = {k: strategy.reduce(torch.as_tensor(v, device=self.device), reduce_op="sum")
                 for k, v in acc.items() if k != "loss_sum"}
        if stats:
            self._train_metrics = self.model.training_metrics(stats)
        train_acc, per_task = train_accuracies(stats)
        self._row = {"epoch": self.current_epoch + 1, "step": int(self.global_step),
                     "train_loss": float(mean_loss), "train_accuracy": train_acc,
                     "val_loss": self._epoch_val.get("loss"), "val_accuracy": self._epoch_val.get("accuracy"),
                     "lr": self._lr()}
        # Per task (multitask): train_<task>_accuracy and val_<task>_accuracy, beside the means above.
        self._row.update({f"train_{t}_accuracy": v for t, v in per_task.items()})
        self._row.update({f"val_{k}": v for k, v in self._epoch_val.items() if k.endswith("_accuracy")})
        return self._row

    def _lr(self) -> float | None:
        """The first optimizer's learning rate now (a Python float: no sync)."""
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None

    def on_train_epoch_end(self) -> None:
        """One row per epoch to the loggers at ``global_step``; train scalars in ``callback_metrics`` (one sync)."""
        row = self.epoch_row()
        for name in ("train_loss", "train_accuracy", "lr"):
            if row[name] is not None:
                self.log(name, row[name], logger=False, on_epoch=True)
        metrics = {k: v if k == "epoch" else float(v) for k, v in row.items() if k != "step" and v is not None}
        for lg in self.loggers:
            lg.log_metrics(metrics, step=row["step"])

    def on_train_end(self) -> None:
        """Under DDP, check once that every rank ends with the same weights (``ranks_agree``)."""
        agree = determinism.ranks_agree(self)
        if agree is not None:
            self.ranks_agree = agree

    # --------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        """Reset the validation metric states."""
        self._reset("val")

    def on_test_epoch_start(self) -> None:
        """Reset the test metric states."""
        self._reset("test")

    def _reset(self, split: str) -> None:
        for t in self.tasks:
            self.summaries[f"{split}__{t}"].reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Accumulate validation metrics for one batch."""
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Accumulate test metrics for one batch."""
        self._eval_step(batch, "test")

    def _eval_step(self, batch: Mapping[str, Any], split: str) -> None:
        for t, o in self.model.eval_outputs(batch).items():
            self.summaries[f"{split}__{t}"].update(o.pred, o.target, batch["w"], o.loss)

    def on_validation_epoch_end(self) -> None:
        """Compute (DDP-synced) validation metrics, keep them for :meth:`metrics_dict`, log ``val_loss``."""
        self._finish("val")

    def on_test_epoch_end(self) -> None:
        """Compute (DDP-synced) test metrics, keep them for :meth:`metrics_dict`, log ``test_loss``."""
        self._finish("test")

    def _finish(self, split: str) -> None:
        reports = {t: summary_reports(self.summaries[f"{split}__{t}"], self.class_names[t]) for t in self.tasks}
        self._results[split], scalars = self.model.summarize(reports)
        scalars = with_mean_accuracy(scalars)
        # During fit the epoch's row (epoch_row) carries the validation scalars to the loggers.
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting:
            self._epoch_val = {k: float(v) for k, v in scalars.items() if v is not None}
        for name, value in scalars.items():
            if value is not None:
                self.log(f"{split}_{name}", float(value), prog_bar=name == "loss", sync_dist=True, logger=not fitting)
        if not fitting and self._trainer is not None and self.loggers:
            self.log("step", float(self.global_step), sync_dist=False)  # x axis: optimizer steps

    def metrics_dict(self, split: str) -> dict:
        """JSON-ready metrics of the last ``"val"`` or ``"test"`` epoch, as the model shapes them.

        Single task: a flat dict (see ``shardtrain.models.metrics.classification_report`` /
        ``regression_report``). Multitask: ``{task: {...}}``. Bagging: the ensemble's metrics
        at top level plus ``"members"`` (one dict per member) and ``"oob_accuracy"`` (per
        member, from the last training epoch; ``None`` where unknown).
        """
        if split not in self._results:
            raise ShardtrainError(f"metrics: split {split!r} has not been evaluated (run trainer.validate/test first)")
        train = self._train_metrics if self._train_metrics is not None else self.model.training_metrics(None)
        return copy.deepcopy({**self._results[split], **train})

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """``{task: probs | pred}``: class probabilities (ensemble mean for bagging) or regression outputs."""
        return self.model.predict(batch["x"] if isinstance(batch, Mapping) else batch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the training-epoch metrics (out-of-bag accuracies) with the weights: test time cannot recompute them."""
        checkpoint["shardtrain_train_metrics"] = self._train_metrics

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the training-epoch metrics saved by :meth:`on_save_checkpoint`."""
        self._train_metrics = checkpoint.get("shardtrain_train_metrics")

    def configure_optimizers(self) -> Any:
        """The configured optimizer (log-variances get no weight decay) and optional LR schedule."""
        return optim.configure_optimizers(self, self.train_cfg)

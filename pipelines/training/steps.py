"""Grouped optimizer steps: several batches, and so several optimizer steps, per ``training_step`` call.

Optimisation is manual (``automatic_optimization = False``) so that one Lightning
``training_step`` call can take several optimizer steps: the DataModule may hand it a
*list* of batches (``train.steps_per_call``) and :meth:`GroupedSteps.run` steps once per
batch, exactly as if the batches had come one per call. Lightning's per-call work (hooks,
loop bookkeeping, progress, logging) is then paid once per list instead of once per
batch, which is most of a small model's step time. ``global_step`` still counts optimizer
steps; LR schedules are stepped here, per batch (``interval: step``) or at the start of
each epoch (``interval: epoch``).

The lean path: on one device in plain fp32, when neither the module nor any callback
listens to the hooks Lightning dispatches around backward and the optimizer step, the
step calls ``loss.backward()`` and the raw optimizer directly (the dispatch then does
nothing but costs ~0.3 ms per step: cProfile, batch-64 MLP on a CPU). Otherwise it goes
through ``manual_backward`` and Lightning's optimizer wrapper (under DDP that re-arms the
gradient all-reduce every step, so grouped steps stay synchronised).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from shardtrain.core.errors import ShardtrainError

# Hooks Lightning dispatches around backward and the optimizer step in manual optimisation.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def nobody_listens(module: pl.LightningModule) -> bool:
    """Whether backward and the optimizer step may skip Lightning's per-step hook dispatch.

    True for plain fp32 on one device when neither ``module`` nor any callback overrides a
    hook that Lightning calls around backward and the optimizer step.
    """
    from pytorch_lightning.plugins.precision import Precision
    from pytorch_lightning.strategies import SingleDeviceStrategy
    from pytorch_lightning.utilities.model_helpers import is_overridden

    trainer = module.trainer
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
        return False
    if any(is_overridden(h, module, pl.LightningModule) for h in (*STEP_HOOKS, "backward")):
        return False
    return not any(is_overridden(h, cb, pl.Callback) for cb in trainer.callbacks for h in STEP_HOOKS)


class GroupedSteps:
    """The optimizer-step loop of a manually optimised LightningModule (see the module docstring).

    Call :meth:`start` from ``on_train_start``, :meth:`epoch_start` from
    ``on_train_epoch_start`` and :meth:`run` from ``training_step``.
    """

    def __init__(self, clip_norm: float = 0.0) -> None:
        self.clip_norm = float(clip_norm)  # train.gradient_clip_norm; Trainer clipping is refused in manual mode
        self.schedules: dict[str, list[Any]] = {"step": [], "epoch": []}  # by interval
        self.lean = False

    def start(self, module: pl.LightningModule) -> None:
        """Sort the LR schedules by interval; pick the lean path."""
        self.schedules = {"step": [], "epoch": []}
        for config in module.trainer.lr_scheduler_configs:
            if config.reduce_on_plateau:
                raise ShardtrainError("train.schedule: plateau schedules are not supported")
            self.schedules[config.interval].append(config.scheduler)
        self.lean = nobody_listens(module)
        if module.device.type == "cpu" and os.environ.get(_NVML_CHECK) == "1" and not torch.cuda.is_available():
            # Lightning sets this at import (NVML probes do not poison fork); then every
            # Adam/AdamW step's capture check re-probes NVML, which on a machine without a
            # GPU driver means a failed dlopen: 0.17 ms of a 0.25 ms optimizer step. With no
            # GPU there is nothing to poison, so use the cached runtime probe instead.
            os.environ[_NVML_CHECK] = "0"

    def epoch_start(self, epoch: int) -> None:
        """Bring per-epoch schedules to ``epoch``.

        Stepping them here rather than at the end of the previous epoch keeps a resumed run
        right: the end-of-epoch checkpoint is written before any epoch-end step would be.
        """
        for schedule in self.schedules["epoch"]:
            while schedule.last_epoch < epoch:
                schedule.step()

    def run(self, module: pl.LightningModule, batches: Sequence[Mapping[str, Any]],
            loss_fn: Callable[[Mapping[str, Any]], torch.Tensor]) -> torch.Tensor:
        """One optimizer step per batch of ``batches`` (``loss_fn(batch)`` gives its loss); returns the last loss."""
        optimizer = module.optimizers()
        lean, raw, clip = self.lean, optimizer.optimizer, self.clip_norm
        for batch in batches:
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            if lean:  # what manual_backward + optimizer.step do when no hook listens
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
                optimizer._on_before_step()  # Lightning's step accounting (global_step)
                raw.step()
                optimizer._on_after_step()
            else:
                module.manual_backward(loss)
                if clip:
                    module.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
                optimizer.step()
            for schedule in self.schedules["step"]:
                schedule.step()
        return loss

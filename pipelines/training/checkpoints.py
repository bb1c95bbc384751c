"""``StepCheckpoint``: mid-epoch checkpoints every n optimizer steps, robust to several steps per call.

Lightning's ``ModelCheckpoint(every_n_train_steps=n)`` saves when ``global_step % n == 0``
after a training-step call. With ``train.steps_per_call`` > 1 one call takes several
optimizer steps and groups restart at every epoch, so ``global_step`` can jump over the
multiples of ``n``. This callback saves when a call *passes* a multiple of ``n`` instead
(for one step per call that is exactly Lightning's rule), as ``step-NNNNNNN.ckpt`` named by
the step it was taken at, and keeps the latest ``keep`` of them.

:class:`MirrorCheckpointIO` is Lightning's checkpoint IO for a run on object storage: right
after every checkpoint saved or removed in the local staging directory it syncs the run's
``shardtrain.training.rundirs.RunMirror`` to ``<out>/runs/<run>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from shardtrain.training.rundirs import RunMirror

STEP_PREFIX = "step-"


class StepCheckpoint(pl.Callback):
    """Save ``<dirpath>/step-NNNNNNN.ckpt`` whenever ``global_step`` passes a multiple of ``every_n_steps``.

    The checkpoint is a full Lightning checkpoint taken after the call (optimizer, LR
    schedule, loop progress and the DataModule's position), so ``train.resume`` continues
    mid-epoch from it. Every rank calls ``save_checkpoint`` (the strategy writes once);
    rank 0 removes all but the newest ``keep`` step checkpoints of the directory.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int, keep: int = 2) -> None:
        super().__init__()
        if every_n_steps < 1 or keep < 1:
            raise ValueError(f"StepCheckpoint: every_n_steps and keep must be >= 1, got {every_n_steps}, {keep}")
        self.dirpath, self.every_n_steps, self.keep = Path(dirpath), int(every_n_steps), int(keep)
        self._last_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember where training (re)starts, so a resumed run does not save at once."""
        self._last_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Save when this call's optimizer steps passed a multiple of ``every_n_steps``."""
        step, last = int(trainer.global_step), self._last_step
        self._last_step = step
        if trainer.fast_dev_run or step // self.every_n_steps == last // self.every_n_steps:
            return
        trainer.save_checkpoint(self.dirpath / f"{STEP_PREFIX}{step:07d}.ckpt")
        if trainer.is_global_zero:
            self._prune()

    def _prune(self) -> None:
        """Delete all but the newest ``keep`` step checkpoints (by step number, not file time)."""
        found = sorted(self.dirpath.glob(f"{STEP_PREFIX}*.ckpt"),
                       key=lambda p: int(p.stem[len(STEP_PREFIX):]) if p.stem[len(STEP_PREFIX):].isdigit() else -1)
        for old in found[:-self.keep]:
            old.unlink(missing_ok=True)


class MirrorCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, then a :meth:`RunMirror.sync` after each save or removal.

    Lightning calls it on global rank zero only, so the mirror uploads once per checkpoint.
    """

    def __init__(self, mirror: RunMirror) -> None:
        super().__init__()
        self.mirror = mirror

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save locally, then mirror the run directory."""
        super().save_checkpoint(checkpoint, path, storage_options)
        self.mirror.sync()

    def remove_checkpoint(self, path: Any) -> None:
        """Remove locally, then mirror (the remote copy goes too)."""
        super().remove_checkpoint(path)
        self.mirror.sync()

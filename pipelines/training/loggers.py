"""Experiment loggers and progress: ``train.logger`` (csv | tensorboard | mlflow, or a list).

Every logged step is an *optimizer* step (``trainer.global_step``), never a Lightning
``training_step`` call, which takes ``train.steps_per_call`` of them. The shell
(``ShardTrainModule``) sends the loggers one row per epoch (train and val loss and
accuracy, the learning rate) and, every ``train.log_every_n_steps`` optimizer steps, the
training loss; this module builds the loggers, logs the resolved config as
hyperparameters, and shows progress: Lightning's bar (counting optimizer steps) on a TTY,
one plain line per epoch otherwise. Each epoch's row also goes to ``<run dir>/epochs.csv``
whatever the loggers, so the report can draw the learning curves.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from shardtrain.core.errors import ShardtrainError

LOGGERS = ("csv", "tensorboard", "mlflow")
EXTRA = "loggers"  # the pyproject extra that installs tensorboard and mlflow-skinny
EPOCHS_CSV = "epochs.csv"
EPOCH_KEYS = ("epoch", "step", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr", "seconds")
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"


def logger_names(train_cfg: Any) -> list[str]:
    """``train.logger`` as a list without repeats, in the order given."""
    names = train_cfg.logger if isinstance(train_cfg.logger, (list, tuple)) else [train_cfg.logger]
    return list(dict.fromkeys(names))


def _need(module: str, package: str, name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ShardtrainError(f"config key 'train.logger': {name} needs the {package} package "
                              f"(pip install 'shardtrain[{EXTRA}]')")


def build_loggers(cfg: Any, run_dir: Path) -> list[Any]:
    """The Lightning loggers ``cfg.train.logger`` names, all writing under ``run_dir``.

    csv: ``logs/metrics.csv`` (+ ``hparams.yaml``). tensorboard: event files in
    ``tensorboard/``. mlflow: ``$MLFLOW_TRACKING_URI`` when set, else a local file store
    ``mlruns/`` (experiment = the config's name, run = the run directory's name).
    """
    from pytorch_lightning.loggers import CSVLogger

    loggers = []
    for name in logger_names(cfg.train):
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(run_dir), name="", version="logs"))
        elif name == "tensorboard":
            _need("tensorboard", "tensorboard", name)
            from pytorch_lightning.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard",
                                             default_hp_metric=False))
        elif name == "mlflow":
            _need("mlflow", "mlflow-skinny", name)
            from pytorch_lightning.loggers import MLFlowLogger

            uri = os.environ.get(MLFLOW_URI_ENV)
            if not uri:
                uri = (run_dir / "mlruns").resolve().as_uri()
                # MLflow 3 keeps its file store only on request; a local, offline store is what we want here.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            loggers.append(MLFlowLogger(experiment_name=cfg.name, run_name=run_dir.name, tracking_uri=uri))
        else:  # the config's Literal refuses these at load
            raise ShardtrainError(f"config key 'train.logger': unknown logger {name!r} (allowed: {', '.join(LOGGERS)})")
    return loggers


def log_config(loggers: list[Any], config: dict[str, Any]) -> None:
    """The resolved config as hyperparameters (nested keys flattened by each logger, e.g. ``train/lr``)."""
    for lg in loggers:
        lg.log_hyperparams(config)


class ConfigHyperparams(pl.Callback):
    """Log the resolved config as hyperparameters when fitting starts (in-process and Ray Train workers alike)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_config(trainer.loggers, self.config)


def epoch_columns(row: dict[str, Any]) -> list[str]:
    """``epochs.csv``'s columns for a row: ``EPOCH_KEYS``, then per-task accuracies (``val_<task>_accuracy``)."""
    return [*EPOCH_KEYS, *sorted(k for k in row if k not in EPOCH_KEYS and k.endswith("_accuracy"))]


def write_epoch_row(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one epoch's row to ``epochs.csv`` (header on the first; blank where unknown).

    A resumed run appends under the header already there (the columns do not change
    within a run: they come from the label columns).
    """
    path = run_dir / EPOCHS_CSV
    new = not path.exists() or path.stat().st_size == 0
    if new:
        fields = epoch_columns(row)
    else:
        with open(path, newline="") as fh:
            fields = next(csv.reader(fh), None) or list(EPOCH_KEYS)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})


def format_epoch_line(row: dict[str, Any], max_epochs: int) -> str:
    """``epoch 2/10  step 864  train_loss 0.4123  val_loss 0.3811  ...  lr 0.001  3.2 s``."""
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    parts = [f"epoch {row['epoch']}{total}", f"step {row['step']}"]
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4f}")
    if row.get("lr") is not None:
        parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


class EpochRecord(pl.Callback):
    """Each training epoch's row: to ``epochs.csv`` and, with ``print_lines``, one line on stderr.

    The row comes from ``ShardTrainModule.epoch_row()`` (values already reduced once at
    the epoch's end; nothing here touches the training steps).
    """

    def __init__(self, run_dir: Path | None, print_lines: bool) -> None:
        self.run_dir, self.print_lines = run_dir, print_lines
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch_row = getattr(pl_module, "epoch_row", None)
        if epoch_row is None:
            return
        row = epoch_row()  # on every rank: its DDP reduce is a collective
        if not trainer.is_global_zero:
            return
        row = dict(row, seconds=round(time.perf_counter() - self._t0, 3))
        if self.run_dir is not None:
            write_epoch_row(self.run_dir, row)
        if self.print_lines:
            print(format_epoch_line(row, trainer.max_epochs or 0), file=sys.stderr, flush=True)


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar counting optimizer steps (a call takes ``steps_per_call`` of them)."""

    def __init__(self, steps_per_call: int) -> None:
        super().__init__()
        self.steps_per_call = max(1, int(steps_per_call))
        self._epoch_start_step = 0

    @property
    def total_train_batches(self) -> int | float:
        steps = getattr(self.trainer.train_dataloader, "steps", None)
        if isinstance(steps, int):
            return steps
        calls = super().total_train_batches
        return calls * self.steps_per_call if isinstance(calls, int) else calls

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_start_step = trainer.global_step
        self.train_progress_bar.unit = "step"
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}{total}")  # as the plain lines

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version ("logs"): noise on the bar
        return metrics

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = trainer.global_step - self._epoch_start_step
        if self._crossed_refresh(n, self.train_progress_bar.total):
            self.train_progress_bar.n = n
            self.train_progress_bar.refresh()
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def _crossed_refresh(self, current: int, total: int | float | None) -> bool:
        # Every call moves the bar by up to steps_per_call: refresh when it crossed a refresh boundary.
        rate = max(1, self.refresh_rate)
        return self.is_enabled and (current // rate != (current - self.steps_per_call) // rate
                                    or current == total)


def progress_callbacks(steps_per_call: int, run_dir: Path | None, tty: bool | None = None) -> tuple[list[Any], bool]:
    """``(callbacks, enable_progress_bar)``: the step-counting bar on a TTY, plain epoch lines otherwise."""
    tty = sys.stderr.isatty() if tty is None else tty
    callbacks: list[Any] = [EpochRecord(run_dir, print_lines=not tty)]
    if tty:
        callbacks.append(StepProgressBar(steps_per_call))
    return callbacks, tty

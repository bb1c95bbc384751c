"""The train and evaluate stages: shards -> ShardDataModule -> model -> Lightning -> run directory.

Reads top to bottom: find and verify the shards, build the DataModule and the model,
configure the Trainer, fit, then evaluate and report. Each run writes one directory
``O/runs/<time>-<name>/`` holding the resolved config, ``metrics.json``, learning
curves and confusion matrices as PNG, checkpoints, CSV logs and (with
``data.audit``) ``data_audit.json``. Nothing here imports Ray unless
``train.launcher: ray`` asks for it.

``O`` may be a URI (``s3://bucket/prefix``). Shards are then read through the local cache
(``shardtrain.shards.cache``: each process copies the splits it reads, sha256-verified, and
memory-maps the copy), and the run directory is a local staging directory mirrored to
``O/runs/<run>/`` (``shardtrain.training.rundirs``: after every checkpoint, at the end of
train and of evaluate, ``_COMPLETE`` last; the run-directory functions live there and are
importable from here as before). Locations that are logged or
recorded are redacted (``storage.redact``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from shardtrain.config import Config, from_dict, to_dict
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import cache, storage
from shardtrain.shards import format as fmt
from shardtrain.shards.reader import read_index, verify_shards
from shardtrain.training.defaults import (label_columns, monitor_of, read_run_info, record_inputs, resolve_defaults,
                                          selection)
from shardtrain.training.rundirs import (  # noqa: F401  (is_complete: importable from here as before)
    COMPLETE_NAME, RUN_DIR_ENV, find_run_dir, is_complete, latest_run_dir, mark_complete, mirror_for, mirrored,
    new_run_dir, open_run, staging_dir)

log = logging.getLogger("shardtrain")



@dataclass
class TrainResult:
    """What ``train`` leaves for ``evaluate``: the run directory and the live objects."""

    run_dir: Path
    trainer: Any
    module: Any
    datamodule: Any
    best_ckpt: str | None
    fit_seconds: float
    config: Config | None = None  # the config as trained: data.batch_size and train.monitor resolved


def shard_dirs(cfg: Config, out: storage.Location) -> dict[str, storage.Location | None]:
    """Train/val/test shard directories: train from augment when it ran (``data.source``), else prepare.

    ``Path``s under a local ``out``, URIs under a URI ``out``.
    """
    prep, aug = storage.join(out, "shards", "prepare"), storage.join(out, "shards", "augment")
    source = cfg.data.source
    if source == "auto":
        augmented = storage.exists(storage.join(aug, "train", fmt.INDEX_NAME))
        source = "augment" if cfg.augment.copies > 0 and augmented else "prepare"
    train = storage.join(aug if source == "augment" else prep, "train")
    val = storage.join(prep, "val") if storage.exists(storage.join(prep, "val", fmt.INDEX_NAME)) else None
    test = storage.join(prep, "test") if storage.exists(storage.join(prep, "test")) else None
    return {"train": train, "val": val, "test": test}


def local_dirs(dirs: dict[str, storage.Location | None]) -> dict[str, Path | None]:
    """The splits as local directories: a local one as it is, a remote one as its verified cache copy."""
    return {k: None if v is None else cache.local_split(v) for k, v in dirs.items()}


def check_shards(dirs: dict[str, storage.Location | None]) -> dict[str, Any]:
    """Verify every split before training; features must agree across splits. Returns train's index.

    A remote split is copied into the local cache first (every shard checked against its
    sha256 on the way) and its copy verified, so training then reads the same bytes.
    """
    indexes = {}
    for split, directory in dirs.items():
        if directory is None:
            continue
        shown = storage.redact(directory)
        if not storage.exists(directory):
            raise ShardtrainError(f"{shown}: no shards here; run the data stages first (--stage prepare)")
        problems = verify_shards(cache.local_split(directory))
        if problems:
            raise ShardtrainError(f"{problems[0]} (run the data stages again, or `shardtrain inspect {shown} --verify`)")
        indexes[split] = read_index(cache.local_split(directory))
    train = indexes["train"]
    keys = ("kind", "shape", "dim", "dtype")
    for split, index in indexes.items():
        a = {k: train.get("features", {}).get("x", {}).get(k) for k in keys}
        b = {k: index.get("features", {}).get("x", {}).get(k) for k in keys}
        if a != b:
            raise ShardtrainError(f"{storage.redact(dirs[split])}: features {b} do not match the training shards' {a}")
        _check_label_counts(dirs[split], index)
    return train


def _check_label_counts(directory: storage.Location, index: dict[str, Any]) -> None:
    """Labels outside the declared classes (per the index's class counts) fail before training."""
    for column, desc in index.get("labels", {}).items():
        classes = desc.get("classes")
        if classes is None:
            continue
        bad = sorted(int(k) for k in desc.get("counts", {}) if not -1 <= int(k) < len(classes))
        if bad:
            raise ShardtrainError(f"{storage.redact(directory)}: column {column} has label {bad[0]} outside the "
                                  f"{len(classes)} declared classes")


AUTO_STEPS_PER_CALL = 16  # Lightning's ~1.5 ms per call is then < 0.1 ms per optimizer step


def steps_per_call(cfg: Config) -> int:
    """``train.steps_per_call`` resolved: optimizer steps per Lightning ``training_step`` call.

    ``auto`` (0) is 16 with the local launcher (one process or Lightning DDP: every
    backward goes through ``manual_backward``, which re-arms DDP's gradient all-reduce, so
    each step is synchronised) and 1 with Ray Train, whose mid-epoch reports are taken at
    exact multiples of ``checkpoint_every_n_steps``. ``max_steps`` stays exact (the
    DataModule hands out no batch past it) and local step checkpoints are taken when a call
    passes a multiple of ``checkpoint_every_n_steps`` (``shardtrain.training.checkpoints``).
    """
    tc = cfg.train
    n = tc.steps_per_call
    if n < 0:
        raise ShardtrainError(f"config key 'train.steps_per_call': must be >= 0 (0 = auto), got {n}")
    if tc.launcher == "ray":
        if n > 1:
            raise ShardtrainError(f"config key 'train.steps_per_call': {n} is not supported with train.launcher=ray "
                                  "(its reports count single steps); use 0 or 1")
        return 1
    return n or AUTO_STEPS_PER_CALL


def build_datamodule(cfg: Config, dirs: dict[str, Path | None], audit_dir: Path | None) -> Any:
    """The ShardDataModule over the given split directories, with ``data.batch_augment`` when enabled."""
    from shardtrain.data.datamodule import ShardDataModule

    feature = read_index(dirs["train"]).get("features", {}).get("x", {})
    return ShardDataModule.from_config(dirs["train"], dirs["val"], dirs["test"], cfg.data, seed=cfg.seed,
                                       audit_dir=audit_dir if cfg.data.audit else None,
                                       steps_per_call=steps_per_call(cfg), batch_augment=batch_augment(cfg, feature))


def batch_augment(cfg: Config, feature: dict[str, Any]) -> Any:
    """The on-device ``BatchAugment`` that ``data.batch_augment`` asks for (None when off).

    It is the DataModule's (applied to training batches only, drawn from the global step),
    so a user's own LightningModule on a ``ShardDataModule`` gets the same augmentation.
    """
    ba = cfg.data.batch_augment
    if not ba.enabled:
        return None
    if feature.get("kind") != "dense" or len(feature.get("shape", [])) not in (2, 3):
        raise ShardtrainError("config key 'data.batch_augment.enabled': needs image features (prepare.features=pixels)")
    from shardtrain.augment.image import BatchAugment

    return BatchAugment(tuple(feature["shape"]), shift=ba.shift, flip=ba.flip, noise_std=ba.noise_std,
                        erase=ba.erase, seed=cfg.seed)


def build_module(cfg: Config, index: dict[str, Any]) -> Any:
    """The model named by ``cfg.model`` wrapped in the LightningModule, sized from the shard index."""
    from shardtrain.models.build import build_model
    from shardtrain.training.module import ShardTrainModule

    feature = index.get("features", {}).get("x", {})
    labels = label_columns(index)
    if not labels:
        raise ShardtrainError(f"{index.get('split')} shards have no label column (label or label_<task>)")
    model = build_model(cfg.model, feature, labels, loss=cfg.train.loss)
    module = ShardTrainModule(model, cfg.model, cfg.train, cfg.evaluate, labels)
    module.seed = cfg.seed
    return module


def trainer_kwargs(cfg: Config, run_dir: Path, has_val: bool) -> dict[str, Any]:
    """Trainer arguments from ``cfg.train``: devices, strategy, precision, loggers, progress, checkpoints, early stop.

    ``best.ckpt`` and early stopping follow one metric, ``train.monitor`` in
    ``train.monitor_mode`` (resolved from the labels by ``train``; see
    ``shardtrain.training.defaults``). Loggers and progress are
    ``shardtrain.training.loggers``'s: every step they show is an optimizer step, and the
    shell sends them its own rows (per epoch, and the training loss every
    ``log_every_n_steps`` optimizer steps), so Lightning's per-call step logging is off
    (``log_every_n_steps=0``: no per-call log flush either).
    """
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from shardtrain.training.checkpoints import MirrorCheckpointIO, StepCheckpoint
    from shardtrain.training.loggers import ConfigHyperparams, build_loggers, progress_callbacks

    tc = cfg.train
    monitor, mode = monitor_of(cfg)
    # Without validation there is no "best": keep only last.ckpt (one save per epoch, not two).
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best",
                           monitor=monitor if has_val else None, mode=mode, save_last=True,
                           save_top_k=1 if has_val else 0)
    progress, bar = progress_callbacks(steps_per_call(cfg), run_dir)
    callbacks = [ckpt, *progress, ConfigHyperparams(to_dict(cfg))]
    if tc.checkpoint_every_n_steps:
        # Mid-epoch checkpoints (the DataModule's position is in them), the latest two kept.
        callbacks.append(StepCheckpoint(run_dir / "checkpoints", tc.checkpoint_every_n_steps, keep=2))
    if tc.early_stopping_patience > 0:
        if not has_val:
            raise ShardtrainError("config key 'train.early_stopping_patience': needs a validation split (data.val_fraction > 0)")
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=tc.early_stopping_patience))
    kwargs = {
        "accelerator": tc.accelerator, "devices": tc.devices, "strategy": tc.strategy, "precision": tc.precision,
        "max_epochs": tc.max_epochs, "max_steps": tc.max_steps,
        "log_every_n_steps": 0, "logger": build_loggers(cfg, run_dir), "callbacks": callbacks,
        "num_sanity_val_steps": 0, "enable_progress_bar": bar,
        "default_root_dir": str(run_dir),
    }
    mirror = mirror_for(run_dir)
    if mirror is not None:  # a run on object storage: every checkpoint saved is mirrored at once
        kwargs["plugins"] = [MirrorCheckpointIO(mirror)]
    return kwargs


def set_cpu_threads(cfg: Config) -> int:
    """Give torch ``train.cpu_threads`` intra-op threads (auto: cores / processes on this node).

    Small MLP steps lose badly to oversubscription: two DDP ranks with two threads each on
    two cores measured several times slower than one thread each.
    """
    import torch

    n = cfg.train.cpu_threads
    if n <= 0:
        devices = cfg.train.devices if isinstance(cfg.train.devices, int) else 1
        per_node = devices if "ddp" in cfg.train.strategy and cfg.train.accelerator == "cpu" else 1
        n = max(1, (os.cpu_count() or 1) // max(per_node, 1))
    torch.set_num_threads(n)
    return n


def _resume_path(cfg: Config, run_dir: Path | None) -> str | None:
    """``train.resume``: a checkpoint path or URI, or ``last`` for ``run_dir``'s (the latest run's) ``last.ckpt``.

    A checkpoint URI is downloaded next to the cache's staged runs first (Lightning reads a local file).
    """
    resume = cfg.train.resume
    if not resume:
        return None
    if resume != "last" and not storage.is_local(resume):
        local = staging_dir(resume).with_suffix(".ckpt")
        if storage.file_size(resume) is None:
            raise ShardtrainError(f"config key 'train.resume': checkpoint {storage.redact(resume)} not found")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(storage.read_bytes(resume))
        return str(local)
    path = run_dir / "checkpoints" / "last.ckpt" if resume == "last" else storage.local_path(resume)
    if not path.is_file():
        shown = mirrored(run_dir, path) if resume == "last" else str(path)
        raise ShardtrainError(f"config key 'train.resume': checkpoint {shown} not found")
    return str(path)


def check_checkpoint(module: Any, ckpt_path: str) -> None:
    """Fail before training when a checkpoint's tensors do not fit the model built from the shards."""
    import torch

    state = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("state_dict", {})
    mine = module.state_dict()
    for key, tensor in state.items():
        if key in mine and tuple(mine[key].shape) != tuple(tensor.shape):
            raise ShardtrainError(
                f"{ckpt_path}: {key} has shape {tuple(tensor.shape)} but the model built from these shards "
                f"needs {tuple(mine[key].shape)} (model input size or classes differ)")


def train(cfg: Config, out: storage.Location, launcher: Callable[..., TrainResult] | None = None) -> TrainResult:
    """Fit the configured model on the shards under ``out``; returns the run for ``evaluate``.

    ``launcher`` replaces the in-process fit (same arguments as :func:`fit`): the entry
    points pass Ray Train's for ``train.launcher: ray``, which keeps this layer free of
    any import of the cluster layer above it.
    """
    dirs = shard_dirs(cfg, out)
    index = check_shards(dirs)
    # data.batch_size / train.monitor "auto" become plain values here, so that every rank, the
    # Ray Train workers and the run's config.yaml see the same ones.
    cfg, notes = resolve_defaults(cfg, local_dirs(dirs), index, announce=_local_rank_zero())
    if cfg.train.resume == "last":
        latest = latest_run_dir(out)
        # Rank 0 stages a remote run (downloads it); other ranks on the node use that same copy.
        run_dir = open_run(latest) if _local_rank_zero() or storage.is_local(latest) else staging_dir(str(latest))
        ckpt_path = _resume_path(cfg, run_dir)
    else:
        ckpt_path = _resume_path(cfg, None)
        run_dir = new_run_dir(cfg, out)
    if _local_rank_zero():
        (run_dir / COMPLETE_NAME).unlink(missing_ok=True)  # a resumed run is unfinished again until fit returns
        record_inputs(run_dir, out, dirs, notes)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(storage.redact_obj(to_dict(cfg)), sort_keys=False))
    mirror = mirror_for(run_dir)
    if mirror is not None and _local_rank_zero():
        mirror.sync()  # the run is listed (config.yaml) from the start, as a local one is
    result = (launcher or fit)(cfg, out, run_dir, dirs, index, ckpt_path)
    result.config = cfg
    trainer = result.trainer
    if trainer.is_global_zero and not getattr(trainer, "interrupted", False):
        mark_complete(run_dir, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fit_seconds": result.fit_seconds})
    if mirror is not None and trainer.is_global_zero:
        mirror.sync(final=True)
        log.info("run mirrored to %s", mirror.shown(run_dir))
    return result


def _local_rank_zero() -> bool:
    """Whether this process is not a re-launched DDP child rank (those share rank 0's run dir)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def fit(cfg: Config, out: storage.Location, run_dir: Path, dirs: dict[str, storage.Location | None],
        index: dict[str, Any], ckpt_path: str | None) -> TrainResult:
    """The in-process fit: Lightning on this machine's devices (one process, or DDP ranks)."""
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    set_cpu_threads(cfg)
    dm = build_datamodule(cfg, dirs, run_dir)
    module = build_module(cfg, index)
    if ckpt_path:
        check_checkpoint(module, ckpt_path)
    has_val = dirs["val"] is not None or cfg.data.val_fraction > 0
    trainer = pl.Trainer(**trainer_kwargs(cfg, run_dir, has_val))
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - t0
    if os.environ.get("LOCAL_RANK", "0") == "0":
        os.environ.pop(RUN_DIR_ENV, None)  # a later train() in this process gets its own run dir
    best = trainer.checkpoint_callback.best_model_path or None if trainer.checkpoint_callback else None
    if trainer.is_global_zero:
        log.info("fit: %.1f s, %d epochs, run dir %s", fit_seconds, trainer.current_epoch, mirrored(run_dir, run_dir))
    return TrainResult(run_dir, trainer, module, dm, best, fit_seconds)


def evaluate(cfg: Config, out: storage.Location, result: TrainResult | None = None,
             run: str | Path | None = None) -> dict[str, Any]:
    """Validate and test the trained model; write metrics.json, plots and print the summary table.

    Without ``result`` (``--stage evaluate``) the run is ``run`` (a run directory or a run
    name under ``O/runs``), else the newest complete one; see :func:`find_run_dir`.
    """
    import pytorch_lightning as pl

    from shardtrain.training.loggers import EPOCHS_CSV
    from shardtrain.training.report import chosen_by, curve_rows, plot_confusions, plot_learning_curves, summary_table

    if result is None:
        run_dir = open_run(find_run_dir(out, run))
        cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        dirs = shard_dirs(cfg, out)
        index = check_shards(dirs)
        dm = build_datamodule(cfg, dirs, None)
        module = build_module(cfg, index)
        ckpt = run_dir / "checkpoints" / "best.ckpt"
        ckpt = ckpt if ckpt.exists() else run_dir / "checkpoints" / "last.ckpt"
        check_checkpoint(module, str(ckpt))
        trainer = pl.Trainer(accelerator=cfg.train.accelerator, devices=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False)
        ckpt_path = str(ckpt)
        fit_seconds = None
    else:
        run_dir, trainer, module, dm = result.run_dir, result.trainer, result.module, result.datamodule
        ckpt_path, fit_seconds = result.best_ckpt, result.fit_seconds
        cfg = result.config or cfg
    metrics: dict[str, Any] = {}
    t0 = time.perf_counter()
    if dm.has_split("val"):
        trainer.validate(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
        metrics["val"] = module.metrics_dict("val")
    if dm.dirs.get("test") is not None:
        trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
        metrics["test"] = module.metrics_dict("test")
    if not trainer.is_global_zero:
        return metrics
    epoch = evaluated_epoch(ckpt_path, trainer)
    curves = run_dir / EPOCHS_CSV if (run_dir / EPOCHS_CSV).exists() else run_dir / "logs" / "metrics.csv"
    chosen = selection(cfg, ckpt_path, epoch, curve_rows(curves), dm.has_split("val"))
    metrics["selection"] = chosen
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    info = read_run_info(run_dir)  # train wrote the shard dirs and resolved defaults there
    info.update({"fit_seconds": fit_seconds if fit_seconds is not None else info.get("fit_seconds"),
                 "eval_seconds": time.perf_counter() - t0,
                 "checkpoint": mirrored(run_dir, ckpt_path) if ckpt_path else ckpt_path,
                 "epochs": trainer.current_epoch, "device_cache": getattr(dm, "cache_modes", {}),
                 "padding_per_epoch": getattr(dm, "padding_per_epoch", 0),
                 "carved_val": getattr(dm, "carve_report", None), "ranks_agree": getattr(module, "ranks_agree", None),
                 "evaluated_epoch": epoch, "selection": chosen, "batch_size": getattr(dm, "batch_size", None)})
    (run_dir / "run.json").write_text(json.dumps(storage.redact_obj(info), indent=2, default=str) + "\n")
    plot_learning_curves(curves, run_dir / "learning_curves.png", evaluated_epoch=epoch,
                         title=f"{run_dir.name}: {chosen_by(chosen)}" if epoch else run_dir.name, selection=chosen)
    plot_confusions(metrics.get("test", {}), dm.labels, run_dir,
                    f"{run_dir.name}, epoch {epoch}" if epoch else run_dir.name)
    mirror = mirror_for(run_dir)
    if mirror is not None:
        mirror.sync(final=True)
    print(f"\nrun: {mirrored(run_dir, run_dir)}\n{summary_table(metrics)}", flush=True)
    return metrics


def evaluated_epoch(ckpt_path: str | None, trainer: Any) -> int | None:
    """The 1-based training epoch whose weights were evaluated: the checkpoint's, else the last trained."""
    if ckpt_path:
        import torch

        epoch = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("epoch")
        return None if epoch is None else int(epoch) + 1  # Lightning saves the 0-based current epoch
    return int(trainer.current_epoch) or None

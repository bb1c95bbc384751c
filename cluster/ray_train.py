"""``train.launcher: ray``: the same Lightning fit, run by Ray Train's ``TorchTrainer`` (Ray Train V2).

``fit_with_ray`` (called by ``shardtrain.training.stage.train``) starts or joins Ray, then runs
``train_loop_per_worker`` on ``train.num_workers`` workers (``ScalingConfig``; one GPU
each with ``train.use_gpu``, else CPU DDP over gloo). Each worker builds the DataModule
and the module exactly as the local launcher does (``build_datamodule``, ``build_module``,
``trainer_kwargs``) and fits with Ray's Lightning integration: ``RayDDPStrategy``,
``RayLightningEnvironment``, ``prepare_trainer`` and a ``RayTrainReportCallback`` that
also reports every ``train.checkpoint_every_n_steps`` steps, not only at epoch ends.

Where things go:

* checkpoints: only through Ray, to ``train.storage_path`` (default ``<run dir>/ray_train``)
  under the experiment name ``<run dir name>``, one directory per report
  (``epoch0001-step0000022-end/checkpoint.ckpt``, a full Lightning checkpoint that
  includes the DataModule's position). Ray keeps the latest and the best (lowest
  ``val_loss`` at an epoch end; without validation the latest is the best);
* CSV logs (``<run dir>/logs``) and audit files: written by the workers (rank 0 / every
  rank) into the run dir, which like the shards must be on a filesystem every node sees.

A run under a URI ``--out`` (``s3://bucket/out``, trained in a local staging directory that
``shardtrain.training.rundirs`` mirrors to ``O/runs/<run>``): Ray's storage defaults to
``O/runs/<run>/ray_train`` on the store itself, opened with shardtrain's own filesystem
(``storage.resolve``: the same endpoint and region as the shards, credentials from each
node's environment, never from the driver), so every worker uploads its checkpoints
straight to the store and no node needs a shared disk. A ``train.storage_path`` URI is
opened the same way. The workers also upload their logs and audit files to the run URI
after the fit, and the driver fetches those it does not have (workers on other nodes).

Faults: ``FailureConfig(max_failures=train.max_failures)``. When a worker dies, Ray
restarts the whole worker group; each worker then gets the latest reported checkpoint
from ``ray.train.get_checkpoint()`` and hands it to ``trainer.fit(ckpt_path=...)``, so
the run resumes at that step (mid-epoch too: the DataModule skips the batches done).
A run restarted under the same storage path and name (``train.resume: last``) resumes
the same way; a Ray checkpoint wins over ``train.resume``'s file.

After the fit the driver copies the best and the latest checkpoint to
``<run dir>/checkpoints/{best,last}.ckpt`` (where ``evaluate`` and ``resume: last`` look),
loads ``best`` into a fresh module with a fresh DataModule and a single-process CPU
``pl.Trainer``, and returns them as the ``TrainResult``: ``evaluate`` then validates and
tests on the driver. ``<run dir>/ray_train.json`` records the storage location, the
checkpoints, the epochs/steps and the step the final attempt resumed from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import ray.train
import torch
from pytorch_lightning.callbacks import Checkpoint
from ray.train.lightning import RayTrainReportCallback

from shardtrain.config import Config
from shardtrain.core.errors import ShardtrainError
from shardtrain.training.defaults import checkpoint_score, monitor_of

log = logging.getLogger("shardtrain")

CKPT_NAME = RayTrainReportCallback.CHECKPOINT_NAME  # "checkpoint.ckpt" inside each Ray checkpoint dir
SCORE = "checkpoint_score"  # lower is better; Ray keeps the best by it and always the latest
RESULT_NAME = "ray_train.json"


class StepReportCallback(RayTrainReportCallback, Checkpoint):
    """Report a full Lightning checkpoint to Ray Train every ``every_n_steps`` steps and at every epoch end.

    Ray's own callback reports only at epoch ends; a lost worker would then lose the whole
    epoch. Each report carries ``trainer.callback_metrics`` plus ``epoch``, ``step``,
    ``epoch_end`` and ``checkpoint_score``: the run's ``train.monitor`` at an epoch end (as a
    lower-is-better score, so Ray keeps the epoch ``ModelCheckpoint`` would), ``inf`` mid-epoch
    (never the best), or ``-step`` without validation (the latest is the best). Every rank
    calls ``report`` at the same steps (Ray requires it); only rank 0 writes the file.
    Being a Lightning ``Checkpoint`` makes it run last, after the module's own
    ``on_train_epoch_end`` (so the epoch's ``train_loss`` and ``train_accuracy`` are in the report) and after
    early stopping, like ``ModelCheckpoint``; it is the run's only checkpoint callback.
    """

    def __init__(self, every_n_steps: int, has_val: bool, monitor: tuple[str, str] = ("val_loss", "min")) -> None:
        super().__init__()
        self.every_n_steps, self.has_val, self.monitor = int(every_n_steps), has_val, monitor

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Report when ``global_step`` (already counting this batch) hits a multiple of ``every_n_steps``."""
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._report(trainer, epoch_end=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report at the end of every epoch (after validation, so ``val_loss`` is current)."""
        self._report(trainer, epoch_end=True)

    def _report(self, trainer: pl.Trainer, epoch_end: bool) -> None:
        step, epoch = int(trainer.global_step), int(trainer.current_epoch)
        metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if not self.has_val:
            score = -float(step)
        else:
            score = checkpoint_score(*self.monitor, metrics) if epoch_end else math.inf
        metrics.update(epoch=epoch, step=step, epoch_end=epoch_end, **{SCORE: score})
        # Unique per run: a resumed attempt only reports steps after the one it restored.
        name = f"epoch{epoch:04d}-step{step:07d}" + ("-end" if epoch_end else "")
        tmpdir = Path(self.tmpdir_prefix, name)
        tmpdir.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmpdir / CKPT_NAME, weights_only=False)  # collective; rank 0 writes
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmpdir)),
                         checkpoint_dir_name=name, checkpoint_upload_mode=self.checkpoint_upload_mode)
        shutil.rmtree(tmpdir, ignore_errors=True)  # uploaded synchronously (SYNC), the copy is done


class _ResumeProbe(pl.Callback):
    """Remember the global step at ``on_train_start`` (after Lightning restored any checkpoint)."""

    def __init__(self) -> None:
        self.start_step: int | None = None  # stays None when the restored run had nothing left to do

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the step training starts from (0, or the restored checkpoint's)."""
        self.start_step = int(trainer.global_step)


def storage_path(cfg: Config, run_dir: Path) -> str:
    """Where Ray Train keeps checkpoints: ``train.storage_path`` (shared path or URI), else the run's own.

    The run's own is ``<run URI>/ray_train`` for a run mirrored to a store (a URI ``--out``),
    else ``<run dir>/ray_train``.
    """
    from shardtrain.shards import storage
    from shardtrain.training.rundirs import mirror_for

    if cfg.train.storage_path:
        path = cfg.train.storage_path
        return path if "://" in path else str(Path(path).expanduser().resolve())
    mirror = mirror_for(run_dir)
    if mirror is not None:
        return str(storage.join(mirror.remote, "ray_train"))
    return str((run_dir / "ray_train").resolve())


def _ray_storage(location: str) -> tuple[str, Any, str]:
    """``(storage_path, storage_filesystem, prefix)`` for Ray's ``RunConfig``.

    A local path or ``file://`` goes to Ray as a path (no filesystem). A store URI is opened
    by ``storage.resolve`` (the endpoint and region shardtrain uses for the shards), so Ray
    gets ``bucket/key`` and that filesystem; ``prefix`` (``s3://``) turns the paths Ray
    reports back into URIs.
    """
    from shardtrain.shards import storage

    local = storage.local_path(location)
    if local is not None:
        return str(local), None, ""
    filesystem, key = storage.resolve(location)
    return key, filesystem, f"{storage.scheme(location)}://"


def _upload_worker_files(run_dir: Path, run_uri: str, rank: int) -> None:
    """Copy this worker's run files (rank 0: ``logs/``; every rank: its audit) to the run URI.

    A worker on another node than the driver writes them into its own node's copy of the
    staging path; uploaded here, the driver fetches them (``_fetch_worker_files``).
    """
    from shardtrain.shards import storage

    files = list(run_dir.glob(f"data_audit.rank{rank}.json"))
    if rank == 0 and (run_dir / "logs").is_dir():
        files += [f for f in (run_dir / "logs").rglob("*") if f.is_file() and not f.name.startswith(".")]
    for f in files:
        storage.write_bytes(storage.join(run_uri, *f.relative_to(run_dir).parts), f.read_bytes())


def _fetch_worker_files(run_dir: Path, run_uri: str) -> None:
    """Download the workers' uploaded logs and audits the driver's staging directory lacks."""
    from shardtrain.shards import storage

    remote = [f"logs/{name}" for name in _walk(storage.join(run_uri, "logs"))]
    remote += [name for name in storage.listdir(run_uri) if name.startswith("data_audit.rank")]
    for rel in remote:
        target = run_dir / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(storage.read_bytes(storage.join(run_uri, *rel.split("/"))))


def _walk(location: str) -> list[str]:
    """Every file below a store prefix, as relative POSIX paths."""
    from pyarrow import fs as pafs

    from shardtrain.shards import storage

    filesystem, key = storage.resolve(location)
    infos = filesystem.get_file_info(pafs.FileSelector(key, recursive=True, allow_not_found=True))
    return sorted(i.path[len(key):].lstrip("/") for i in infos if i.type == pafs.FileType.File)


def worker_trainer_kwargs(cfg: Config, run_dir: Path, has_val: bool,
                          extra_callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """``shardtrain.training.stage.trainer_kwargs`` adapted to a Ray Train worker.

    Ray's strategy and environment replace ``train.strategy``/``devices``; one device per
    worker (``gpu`` with ``train.use_gpu`` else ``cpu``). Lightning's ``ModelCheckpoint`` is
    replaced by ``StepReportCallback`` (Ray's storage holds the checkpoints); early stopping
    and the CSV logger (rank 0 writes ``<run dir>/logs``) stay.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment

    from shardtrain.training.checkpoints import StepCheckpoint
    from shardtrain.training.stage import trainer_kwargs

    kw = trainer_kwargs(cfg, run_dir, has_val)
    callbacks = [c for c in kw["callbacks"] if not isinstance(c, (ModelCheckpoint, StepCheckpoint))]
    callbacks += [StepReportCallback(cfg.train.checkpoint_every_n_steps, has_val, monitor_of(cfg)),
                  *extra_callbacks]
    kw.update(strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()], devices="auto",
              accelerator="gpu" if cfg.train.use_gpu else "cpu", callbacks=callbacks)
    return kw


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker: build data, model and Trainer as ``shardtrain.training.stage`` does, resume, fit.

    ``config``: ``cfg`` (Config), ``run_dir``, ``dirs`` ({split: path | None}), ``index`` (train's
    _index.json), ``has_val``, ``ckpt_path`` (``train.resume``'s file or None), ``extra_callbacks``.
    Returns (rank 0's value reaches the driver as ``Result.return_value``) the epochs and steps
    done and the step this attempt resumed from.
    """
    from ray.train.lightning import prepare_trainer

    from shardtrain.training.stage import build_datamodule, build_module

    cfg: Config = config["cfg"]
    for key, value in config.get("storage_env", {}).items():  # the driver's S3 endpoint/region, never credentials
        os.environ.setdefault(key, value)
    run_dir = Path(config["run_dir"])
    dirs = {k: v for k, v in config["dirs"].items()}  # paths or URIs; the DataModule localizes URIs
    if cfg.train.cpu_threads > 0:  # else Ray's OMP_NUM_THREADS: the worker's CPUs (1), no oversubscription
        torch.set_num_threads(cfg.train.cpu_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg, dirs, run_dir)
    module = build_module(cfg, config["index"])
    probe = _ResumeProbe()
    kw = worker_trainer_kwargs(cfg, run_dir, config["has_val"], [probe, *config["extra_callbacks"]])
    trainer = prepare_trainer(pl.Trainer(**kw))
    restore = ray.train.get_checkpoint()  # the latest reported checkpoint after a restart, else None
    local = Path(tempfile.mkdtemp(prefix="shardtrain-restore-")) if restore is not None else None
    try:
        ckpt_path = config["ckpt_path"]
        if restore is not None:
            restore.to_directory(str(local))  # a local copy: Ray may delete the stored one while we run
            ckpt_path = str(local / CKPT_NAME)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - t0
    finally:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
    if config.get("run_uri"):
        _upload_worker_files(run_dir, config["run_uri"], int(trainer.global_rank))
    restored_step = None
    if ckpt_path:  # a run restored with nothing left to do never starts training: its step is the restored one
        restored_step = int(trainer.global_step if probe.start_step is None else probe.start_step)
    return {"epochs": int(trainer.current_epoch), "global_step": int(trainer.global_step),
            "restored_step": restored_step, "restored_from": restore.path if restore is not None else ckpt_path,
            "restored_by_ray": restore is not None,
            "worker_fit_seconds": fit_seconds, "world_size": int(trainer.world_size)}


def _copy_checkpoint(checkpoint: Any, dest: Path) -> Path:
    """Copy ``checkpoint.ckpt`` of a Ray checkpoint (local or remote storage) to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as directory:
        src = Path(directory) / CKPT_NAME
        if not src.is_file():
            raise ShardtrainError(f"{checkpoint.path}: Ray checkpoint has no {CKPT_NAME}")
        shutil.copyfile(src, dest)
    return dest


def _merge_audit(run_dir: Path) -> None:
    """Merge the workers' per-rank audit files (they are on the run dir's shared filesystem)."""
    from shardtrain.data.datamodule import AUDIT_NAME, merge_audit

    if not any(run_dir.glob("data_audit.rank*.json")):
        log.warning("data.audit: no data_audit.rank*.json in %s (is the run dir shared with the workers?)", run_dir)
        return
    report = merge_audit(run_dir)
    log.info("data audit: ok=%s (%s)", report["ok"], run_dir / AUDIT_NAME)


def _location(location: Any) -> str | None:
    """A split for the workers: an absolute local path, or the URI as given (``None`` stays)."""
    if location is None:
        return None
    from shardtrain.shards import storage

    path = storage.local_path(location)
    return str(path.resolve()) if path is not None else str(location)


def _storage_env() -> dict[str, str]:
    """The S3 endpoint and region this driver uses, for workers whose environment has none."""
    from shardtrain.stages.runner import STORAGE_ENVS

    return {k: os.environ[k] for k in STORAGE_ENVS if os.environ.get(k)}


def fit_with_ray(cfg: Config, out: Path, run_dir: Path, dirs: dict[str, Path | None], index: dict[str, Any],
                 ckpt_path: str | None, *, address: str | None = None,
                 extra_callbacks: Sequence[pl.Callback] = ()) -> Any:
    """Fit on a Ray cluster with ``TorchTrainer``; returns a ``TrainResult`` whose objects live on the driver.

    ``address``: the Ray cluster (else ``$RAY_ADDRESS``, else a private local Ray on
    127.0.0.1, see ``shardtrain.stages.ray_exec.ensure_ray``). ``extra_callbacks``: more Lightning
    callbacks for every worker (pickled to them; tests use it to inject faults). ``out`` is
    unused: every path the workers need is in ``run_dir`` and ``dirs``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from shardtrain.stages.ray_exec import ensure_ray
    from shardtrain.training.stage import TrainResult, check_checkpoint, build_datamodule, build_module

    if os.environ.get("RAY_TRAIN_V2_ENABLED", "1").lower() in ("0", "false"):
        raise ShardtrainError("train.launcher=ray needs Ray Train V2: unset RAY_TRAIN_V2_ENABLED=0")
    tc = cfg.train
    if tc.num_workers < 1:
        raise ShardtrainError(f"config key 'train.num_workers': expected >= 1, got {tc.num_workers}")
    has_val = dirs["val"] is not None or cfg.data.val_fraction > 0
    module = build_module(cfg, index)  # also fails fast on a bad model config, before any worker starts
    if ckpt_path:
        check_checkpoint(module, ckpt_path)
    from shardtrain.training.rundirs import mirror_for

    ensure_ray(address)
    mirror = mirror_for(run_dir)
    loop_config = {"cfg": cfg, "run_dir": str(run_dir.resolve()), "index": index, "has_val": has_val,
                   # A URI stays one: each worker copies the splits into its own node's shard cache.
                   "dirs": {k: _location(v) for k, v in dirs.items()},
                   "storage_env": _storage_env(),
                   "run_uri": mirror.remote if mirror is not None else None,
                   "ckpt_path": ckpt_path, "extra_callbacks": list(extra_callbacks)}
    ray_path, ray_fs, prefix = _ray_storage(storage_path(cfg, run_dir))
    # A mirrored run's staging directory is "<digest>-<run>": Ray's experiment is named after the run.
    name = mirror.remote.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] if mirror is not None else run_dir.name
    run_config = RunConfig(
        name=name, storage_path=ray_path, storage_filesystem=ray_fs,
        failure_config=FailureConfig(max_failures=tc.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=SCORE,
                                           checkpoint_score_order="min"),
    )
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=loop_config, run_config=run_config,
                           scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu))
    t0 = time.perf_counter()
    result = trainer.fit()  # raises ray.train.TrainingFailedError once max_failures restarts are used up
    fit_seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise ShardtrainError(f"{result.path}: the Ray Train run reported no checkpoint (no training step ran?)")
    info = dict(result.return_value or {})
    best_ray = result.get_best_checkpoint(SCORE, "min")
    best = _copy_checkpoint(best_ray, run_dir / "checkpoints" / "best.ckpt")
    _copy_checkpoint(result.checkpoint, run_dir / "checkpoints" / "last.ckpt")
    if mirror is not None:
        _fetch_worker_files(run_dir, mirror.remote)
    if cfg.data.audit:
        _merge_audit(run_dir)
    # Driver side: a fresh module with the best weights, a fresh DataModule, one CPU process.
    state = torch.load(best, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    module.on_load_checkpoint(state)
    dm = build_datamodule(cfg, dirs, None)
    driver = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(run_dir))
    driver.fit_loop.epoch_progress.current.completed = int(info.get("epochs", state.get("epoch", 0)))  # current_epoch
    from shardtrain.shards.storage import redact

    summary = {"storage": redact(prefix + result.path), "best": redact(prefix + best_ray.path),
               "last": redact(prefix + result.checkpoint.path), "metrics": result.metrics,
               "fit_seconds": fit_seconds, **info}
    if info.pop("restored_by_ray", False) and prefix:  # Ray's own path on the store: bucket/key
        summary["restored_from"] = redact(prefix + str(info["restored_from"]))
    summary.pop("restored_by_ray", None)
    (run_dir / RESULT_NAME).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("ray fit: %.1f s, %s epochs on %d workers, checkpoints in %s", fit_seconds, info.get("epochs"),
             tc.num_workers, summary["storage"])
    return TrainResult(run_dir, driver, module, dm, str(best), fit_seconds)

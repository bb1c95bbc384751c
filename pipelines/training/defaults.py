"""Settings resolved from the data at train time, and which checkpoint they select.

``train.monitor`` / ``train.monitor_mode`` (``auto``: the validation accuracy, highest
best, when any task is a classification; the validation loss, lowest best, for
regression) name the metric that picks ``best.ckpt`` (the checkpoint evaluated) and
drives early stopping. ``data.batch_size: auto`` is sized from the training rows and the
ranks (``shardtrain.data.datamodule.auto_batch_size``). :func:`resolve_defaults` turns
both into plain values before training, so the run's ``config.yaml`` records what was
used; :func:`selection` describes the evaluated checkpoint for ``metrics.json``, and
:func:`record_inputs` makes a run directory self-contained for predict
(``prepare_index.json``, the shard directories in ``run.json``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from shardtrain.config import Config, replace
from shardtrain.core.errors import ShardtrainError

log = logging.getLogger("shardtrain")

MONITORS = ("val_loss", "val_accuracy")
PREPARE_INDEX = "prepare_index.json"  # the run's copy of the prepare TRAIN split's index (predict reads it)


def label_columns(index: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{column: description}`` of the label columns (``label`` / ``label_<task>``) of a shard index."""
    declared = index.get("labels", {})
    return {c["name"]: dict(declared.get(c["name"], {})) for c in index.get("schema", [])
            if c["name"] == "label" or c["name"].startswith("label_")}


def resolve_monitor(train_cfg: Any, labels: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """``(monitor, mode)`` from ``train.monitor`` / ``train.monitor_mode`` and the label columns.

    ``val_accuracy`` is the mean over the classification tasks for multitask models (the
    shell logs that mean under this name) and the ensemble's accuracy for bagging. It
    cannot apply when every label is a regression target: a one-line error before
    training, naming the key.
    """
    classification = [c for c, d in labels.items() if d.get("classes") is not None]
    monitor = train_cfg.monitor
    if monitor == "auto":
        monitor = "val_accuracy" if classification else "val_loss"
    elif monitor == "val_accuracy" and not classification:
        raise ShardtrainError(f"config key 'train.monitor': val_accuracy needs a classification label, and "
                              f"{', '.join(labels) or 'the labels'} are regression targets; use val_loss or auto")
    if monitor not in MONITORS:
        raise ShardtrainError(f"config key 'train.monitor': unknown monitor {monitor!r} (allowed: auto, "
                              f"{', '.join(MONITORS)})")
    mode = train_cfg.monitor_mode
    if mode == "auto":
        mode = "max" if monitor == "val_accuracy" else "min"
    return monitor, mode


def monitor_of(cfg: Config) -> tuple[str, str]:
    """The resolved ``(monitor, mode)`` of a config; ``auto`` left unresolved (no labels known) is val_loss, min."""
    monitor = cfg.train.monitor if cfg.train.monitor != "auto" else "val_loss"
    mode = cfg.train.monitor_mode
    return monitor, mode if mode != "auto" else ("max" if monitor == "val_accuracy" else "min")


def world_size(cfg: Config) -> int:
    """How many ranks train: Ray Train's workers, else the local devices (``auto``/-1 on CPU: one process)."""
    tc = cfg.train
    if tc.launcher == "ray":
        return int(tc.num_workers)
    devices = tc.devices
    if isinstance(devices, str):
        ids = [d for d in devices.split(",") if d.strip()]
        devices = int(ids[0]) if len(ids) == 1 and ids[0].strip().lstrip("-").isdigit() else len(ids)
    if isinstance(devices, int) and devices >= 1:
        return devices
    if tc.accelerator in ("cpu",):
        return 1
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def resolve_defaults(cfg: Config, dirs: Mapping[str, Path | None], index: Mapping[str, Any],
                     announce: bool = True) -> tuple[Config, dict[str, Any]]:
    """The config with ``data.batch_size`` and ``train.monitor``/``monitor_mode`` as plain values, and notes.

    Notes (for ``run.json``): ``{"data.batch_size": {"value", "from": "auto"|"config",
    "training_rows", "ranks", "steps_per_epoch"}, "train.monitor": {...}}``. With
    ``announce`` the auto batch size is logged in one line.
    """
    from shardtrain.data.datamodule import auto_batch_size, describe_batch_size, steps_per_epoch, training_rows

    monitor, mode = resolve_monitor(cfg.train, label_columns(index))
    rows = training_rows(dirs["train"], dirs.get("val"), cfg.data.val_fraction)
    ranks = world_size(cfg)
    size, source = cfg.data.batch_size, "config"
    if size == "auto":
        size, source = auto_batch_size(rows, ranks), "auto"
        if announce:
            log.info("%s", describe_batch_size(size, rows, ranks))
    notes = {"data.batch_size": {"value": size, "from": source, "training_rows": rows, "ranks": ranks,
                                 "steps_per_epoch": steps_per_epoch(rows, size, ranks)},
             "train.monitor": {"monitor": monitor, "mode": mode,
                               "from": "auto" if cfg.train.monitor == "auto" else "config"}}
    if (size, monitor, mode) != (cfg.data.batch_size, cfg.train.monitor, cfg.train.monitor_mode):
        cfg = replace(cfg, data={"batch_size": size}, train={"monitor": monitor, "monitor_mode": mode})
    return cfg, notes


def selection(cfg: Config, ckpt_path: str | None, epoch: int | None, rows: list[dict[str, float]],
              has_val: bool) -> dict[str, Any]:
    """``metrics.json``'s ``selection``: which checkpoint was evaluated, by which metric, and its value.

    ``{"monitor": "val_accuracy", "mode": "max", "epoch": 8, "value": 0.673, "checkpoint":
    "best.ckpt"}``; ``epoch`` is 1-based, ``value`` the monitored metric of that epoch in
    ``epochs.csv`` (``rows``). Without validation nothing is monitored: the last epoch's
    weights are evaluated (monitor, mode and value None).
    """
    monitor, mode = monitor_of(cfg) if has_val else (None, None)
    value = None
    if monitor is not None and epoch is not None:
        value = next((r[monitor] for r in rows if int(r.get("epoch", -1)) == epoch and monitor in r), None)
        seen = [(r[monitor], int(r["epoch"])) for r in rows if monitor in r and "epoch" in r]
        if seen and value is not None:
            best = (max if mode == "max" else min)(seen, key=lambda p: p[0])
            if best[0] != value:  # a launcher that ranks checkpoints by another metric
                log.warning("the evaluated checkpoint (epoch %d, %s %.4f) is not the best by %s (epoch %d, %.4f)",
                            epoch, monitor, value, monitor, best[1], best[0])
    return {"monitor": monitor, "mode": mode, "epoch": epoch, "value": value,
            "checkpoint": Path(ckpt_path).name if ckpt_path else None}


def checkpoint_score(monitor: str, mode: str, metrics: Mapping[str, float]) -> float:
    """The monitored metric as a lower-is-better score (negated for ``max``); ``inf`` when it is missing.

    For launchers that rank checkpoints by one "lower is better" number (Ray Train's
    ``checkpoint_score_order="min"``), so they pick the same epoch as ``ModelCheckpoint``.
    """
    value = metrics.get(monitor)
    if value is None:
        return float("inf")
    return -float(value) if mode == "max" else float(value)


def record_inputs(run_dir: Path, out: Any, dirs: Mapping[str, Any], notes: dict[str, Any]) -> None:
    """Make the run self-contained for predict: copy the prepare TRAIN index, record the shard dirs used.

    The prepare index holds what the features were fitted on (vocabulary, scaling, the
    ``transform`` key); predict re-applies it from here even when ``O/shards`` is gone.
    ``run.json`` gets the absolute shard directories (URIs, without credentials, for a run on
    object storage) and the resolved defaults; evaluate adds its own keys to the same file.
    """
    from shardtrain.shards import storage
    from shardtrain.shards.reader import index_path

    source = index_path(storage.join(out, "shards", "prepare", "train"))
    found = storage.file_size(source) is not None
    if found:
        tmp = run_dir / f".{PREPARE_INDEX}.tmp"
        tmp.write_bytes(storage.read_bytes(source))
        os.replace(tmp, run_dir / PREPARE_INDEX)
    info = read_run_info(run_dir)
    info.update(shard_dirs={k: None if v is None else _shown(v) for k, v in dirs.items()},
                prepare_index=_shown(source) if found else None, resolved=notes)
    (run_dir / "run.json").write_text(json.dumps(storage.redact_obj(info), indent=2, default=str) + "\n")


def _shown(location: Any) -> str:
    """A location as ``run.json`` records it: an absolute local path, or the URI without credentials."""
    from shardtrain.shards import storage

    path = storage.local_path(location)
    return str(path.resolve()) if path is not None else storage.redact(location)


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run as a dict (empty when absent or unreadable: it is rewritten whole)."""
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}

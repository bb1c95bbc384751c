"""The entry point from Python: run the stages of a config in order, prepare -> augment -> train -> evaluate.

:func:`run` is ``shardtrain.run``; the CLI's ``shardtrain run`` calls it too.

Data stages (prepare, augment) ask the dataset's pipeline module for their split
jobs and hand them to the runner; a data stage whose output indexes already carry
the same fingerprint is skipped. Train and evaluate live in ``shardtrain.training.stage``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from shardtrain import __version__
from shardtrain.config import Config, apply_overrides, from_dict, load_config, replace, to_dict
from shardtrain.datasets import get_spec
from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import fingerprint
from shardtrain.stages.runner import is_up_to_date, run_stage
from shardtrain.shards import format as fmt

log = logging.getLogger("shardtrain")

STAGES = ("prepare", "augment", "train", "evaluate", "all")


def stage_dir(out: Path, stage: str) -> Path:
    """Where a data stage writes its splits: ``O/shards/<stage>/``."""
    return out / "shards" / stage


def _pipeline(cfg: Config) -> Any:
    """The pipeline module that knows how to read ``cfg.dataset``."""
    return importlib.import_module(get_spec(cfg.dataset.name).pipeline)


def _fingerprint_config(cfg: Config, sections: tuple[str, ...]) -> dict[str, Any]:
    """The config sections a stage's output depends on (never machine paths like data_dir)."""
    plain = to_dict(cfg)
    plain["dataset"].pop("data_dir", None)
    return {s: plain[s] for s in sections}


def run_data_stage(stage: str, cfg: Config, out: Path, executor: str, address: str | None,
                   force: bool) -> dict[str, Any] | None:
    """Run prepare or augment unless up to date; returns the indexes (None when skipped)."""
    pipeline = _pipeline(cfg)
    if stage == "prepare":
        inputs = pipeline.prepare_inputs(cfg)
        fp = fingerprint(stage, __version__, fmt.SUPPORTED_VERSIONS[-1], inputs["fingerprint"],
                         _fingerprint_config(cfg, ("seed", "dataset", "prepare")))
        splits = inputs["splits"]
    else:
        prep = stage_dir(out, "prepare")
        prep_index = prep / "train" / fmt.INDEX_NAME
        if not prep_index.exists():
            raise ShardtrainError(f"{prep_index}: missing; run --stage prepare first")
        import json

        prep_fp = json.loads(prep_index.read_text())["fingerprint"]
        fp = fingerprint(stage, __version__, prep_fp, _fingerprint_config(cfg, ("seed", "augment")))
        splits = ["train"]
    target = stage_dir(out, stage)
    if not force and is_up_to_date(target, splits, fp):
        log.info("stage %s: up to date (%s), skipped", stage, target)
        return None
    if executor == "ray":
        from shardtrain.stages.ray_exec import ensure_ray

        ensure_ray(address)
    if stage == "prepare":
        inputs["executor"] = executor
    jobs = pipeline.prepare_jobs(cfg, inputs) if stage == "prepare" else pipeline.augment_jobs(
        cfg, stage_dir(out, "prepare"), target)
    indexes = run_stage(
        stage, jobs, target,
        rows_per_shard=cfg.prepare.rows_per_shard, batch_rows=cfg.prepare.batch_rows,
        max_reject_fraction=cfg.prepare.max_reject_fraction, executor=executor, fp=fp,
        config=to_dict(cfg), dataset=cfg.dataset.name,
    )
    if stage == "augment" and hasattr(pipeline, "after_augment"):
        pipeline.after_augment(cfg, target, indexes)
    return indexes


def run_stages(cfg: Config, stage: str, out: Path, *, executor: str = "ray", data_dir: str | None = None,
               address: str | None = None, force: bool = False) -> dict[str, Any]:
    """Run one stage or all of them; returns what each stage produced (indexes, run dir)."""
    if data_dir:
        cfg = replace(cfg, dataset={"data_dir": data_dir})
    out.mkdir(parents=True, exist_ok=True)
    order = ["prepare", "augment", "train", "evaluate"] if stage == "all" else [stage]
    results: dict[str, Any] = {}
    for st in order:
        if st in ("prepare", "augment"):
            if st == "augment" and stage == "all" and not _augments(cfg):
                continue
            results[st] = run_data_stage(st, cfg, out, executor, address, force)
        elif st == "train":
            from shardtrain.training.stage import train

            results[st] = train(cfg, out, launcher=_launcher(cfg, address))
        else:
            from shardtrain.training.stage import evaluate

            results[st] = evaluate(cfg, out, results.get("train"))
    return results


def _launcher(cfg: Config, address: str | None) -> Any:
    """Ray Train's fit for ``train.launcher: ray`` (bound to ``address``), else None (in-process)."""
    if cfg.train.launcher != "ray":
        return None
    import functools

    from shardtrain.cluster.ray_train import fit_with_ray

    return functools.partial(fit_with_ray, address=address)


def _augments(cfg: Config) -> bool:
    """Whether the config asks for offline augmentation copies."""
    return cfg.augment.copies > 0



def run(config: Any, stage: str = "all", out: str | Path = "shardtrain-out", overrides: list[str] | None = None,
        *, executor: str = "local", data_dir: str | None = None, address: str | None = None,
        force: bool = False) -> dict[str, Any]:
    """Run the pipeline in this process and return what each stage produced.

    ``config`` is a preset name, a YAML file path, a mapping in the YAML's shape, or a
    :class:`~shardtrain.config.Config`; ``overrides`` are ``key=value`` strings, exactly
    as ``--set`` takes them. The result maps each stage that ran to its output:
    ``prepare``/``augment`` to ``{split: index}`` (None when up to date),
    ``train`` to a :class:`~shardtrain.training.stage.TrainResult` (``run_dir``, the
    trainer, module and DataModule), ``evaluate`` to the metrics written to
    ``metrics.json``. ``executor`` defaults to ``"local"`` (no Ray); ``"ray"`` runs
    the data stages as Ray tasks, as the CLI does by default. A bad config raises
    :class:`~shardtrain.core.errors.ShardtrainError` before anything is written.
    """
    if stage not in STAGES:
        raise ShardtrainError(f"stage: unknown stage {stage!r}; expected one of {list(STAGES)}")
    if executor not in ("local", "ray"):
        raise ShardtrainError(f"executor: unknown executor {executor!r}; expected 'local' or 'ray'")
    cfg = resolve_config(config, overrides)
    return run_stages(cfg, stage, Path(out), executor=executor, data_dir=data_dir, address=address, force=force)


def resolve_config(config: Any, overrides: list[str] | None = None) -> Config:
    """A validated ``Config`` from a preset name, a file path, a raw mapping or a ``Config``, plus overrides."""
    overrides = list(overrides or [])
    if isinstance(config, Config):
        return from_dict(apply_overrides(to_dict(config), overrides)) if overrides else config
    if isinstance(config, dict):
        return from_dict(apply_overrides(config, overrides))
    if isinstance(config, (str, Path)):
        return load_config(str(config), overrides)
    raise ShardtrainError(f"config: expected a preset name, a path, a mapping or a Config, got {type(config).__name__}")

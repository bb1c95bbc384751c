"""The entry point from Python: run the stages of a config in order, prepare -> augment -> train -> evaluate.

:func:`run` is ``shardtrain.run``; the CLI's ``shardtrain run`` calls it too.

The config is validated whole at load, and the prepare stage's inputs are located
before the output directory is created, so a bad config or missing data writes
nothing. Data stages run through ``shardtrain.stages.plan`` (the dataset class plans
its split jobs, the runner writes the shards); train and evaluate live in
``shardtrain.training.stage``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from shardtrain.config import Config, apply_overrides, from_dict, load_config, replace, to_dict
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import storage
from shardtrain.stages.plan import apply_storage, plan_prepare, run_data_stage

log = logging.getLogger("shardtrain")

STAGES = ("prepare", "augment", "train", "evaluate", "all")


def run_stages(cfg: Config, stage: str, out: storage.Location, *, executor: str = "ray", data_dir: str | None = None,
               address: str | None = None, force: bool = False, run: str | Path | None = None) -> dict[str, Any]:
    """Run one stage or all of them; returns what each stage produced (indexes, run dir).

    ``run`` (``--run``) picks the run ``evaluate`` uses when it runs alone: a run directory
    or a run name under ``out/runs``; without it, the newest run whose training finished.
    ``out`` is a local directory or a URI (``s3://bucket/prefix``); the config's
    ``storage`` section is exported first (:func:`~shardtrain.stages.plan.apply_storage`).
    """
    if run is not None and stage != "evaluate":
        raise ShardtrainError(f"run: picks the run for --stage evaluate only, not --stage {stage}")
    if data_dir:
        cfg = replace(cfg, dataset={"data_dir": data_dir})
    apply_storage(cfg)
    out = _output_root(out)
    order = ["prepare", "augment", "train", "evaluate"] if stage == "all" else [stage]
    if stage == "augment" and not _augments(cfg):
        raise ShardtrainError("config key 'augment.copies': the augment stage needs copies >= 1, got 0")
    # Missing data or resources fail here, before anything is written.
    plan = plan_prepare(cfg) if "prepare" in order else None
    if "augment" in order and _augments(cfg):
        cfg.dataset.resources(cfg)
    storage.makedirs(out)
    results: dict[str, Any] = {}
    for st in order:
        if st in ("prepare", "augment"):
            if st == "augment" and stage == "all" and not _augments(cfg):
                continue
            results[st] = run_data_stage(st, cfg, out, executor, address, force, plan)
        elif st == "train":
            from shardtrain.training.stage import train

            results[st] = train(cfg, out, launcher=_launcher(cfg, address))
        else:
            from shardtrain.training.stage import evaluate

            results[st] = evaluate(cfg, out, results.get("train"), run=run)
    return results


def _output_root(out: storage.Location) -> storage.Location:
    """``--out`` as the layers below take it: a ``Path`` for a local path or ``file://``, else the URI string."""
    path = storage.local_path(out)
    return path if path is not None else str(out)


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
        force: bool = False, run: str | Path | None = None) -> dict[str, Any]:
    """Run the pipeline in this process and return what each stage produced.

    ``config`` is a preset name, a YAML file path, a mapping in the YAML's shape, or a
    :class:`~shardtrain.config.Config`; ``out`` a directory or a URI (``s3://bucket/prefix``,
    ``gs://...``, ``file://...``: shards and runs are written there through
    ``shardtrain.shards.storage``, the endpoint from ``storage.endpoint_override``);
    ``overrides`` are ``key=value`` strings, exactly as ``--set`` takes them. The result maps each stage that ran to its output:
    ``prepare``/``augment`` to ``{split: index}`` (None when up to date),
    ``train`` to a :class:`~shardtrain.training.stage.TrainResult` (``run_dir``, the
    trainer, module and DataModule), ``evaluate`` to the metrics written to
    ``metrics.json``. ``executor`` defaults to ``"local"`` (no Ray); ``"ray"`` runs
    the data stages as Ray tasks, as the CLI does by default. ``run`` (with
    ``stage="evaluate"``) picks the run to evaluate: a run directory or a run name under
    ``out/runs``; without it the newest run whose training finished (one that crashed is
    never picked, and naming one is refused). A bad config raises
    :class:`~shardtrain.core.errors.ShardtrainError` before anything is written.
    """
    if stage not in STAGES:
        raise ShardtrainError(f"stage: unknown stage {stage!r}; expected one of {list(STAGES)}")
    if executor not in ("local", "ray"):
        raise ShardtrainError(f"executor: unknown executor {executor!r}; expected 'local' or 'ray'")
    cfg = resolve_config(config, overrides)
    return run_stages(cfg, stage, out, executor=executor, data_dir=data_dir, address=address, force=force,
                      run=run)


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

"""Plan and run the data stages (prepare, augment) of a config through its dataset class.

The dataset class (``cfg.dataset``, one registered kind per ``dataset.name``) plans
its splits into a typed :class:`~shardtrain.datasets.base.PreparePlan` and builds the
split jobs; the runner applies their pure batch functions shard by shard. A data stage
whose output indexes already carry the same fingerprint is skipped.

A user map (``prepare.map`` / ``augment.map``, ``shardtrain.stages.usermap``) wraps every
split job of its stage; its spec, options and the sha256 of its module's file are in the
stage fingerprint, and a bad spec fails in :func:`plan_prepare`, before any output exists.
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import fingerprint
from shardtrain.shards import format as fmt
from shardtrain.stages.context import PreparePlan
from shardtrain.stages.context import StageConfig as Config
from shardtrain.stages.runner import is_up_to_date, run_stage
from shardtrain.stages.usermap import check_spec, source_identity, wrap_job

log = logging.getLogger("shardtrain")
_VERSION = version("shardtrain")  # in every fingerprint: a new release re-runs the stages (no root import here)


def stage_dir(out: Path, stage: str) -> Path:
    """Where a data stage writes its splits: ``O/shards/<stage>/``."""
    return out / "shards" / stage


def _fingerprint_config(cfg: Config, sections: tuple[str, ...]) -> dict[str, Any]:
    """The config sections a stage's output depends on (never machine paths like data_dir)."""
    plain = cfg.model_dump(mode="json")
    plain["dataset"].pop("data_dir", None)
    return {s: plain[s] for s in sections}


def _map_identity(spec: str | None, key: str) -> list[str]:
    """The user map's part of a fingerprint: nothing without one (older fingerprints stay valid)."""
    return [] if spec is None else [source_identity(spec, key)]


def plan_prepare(cfg: Config) -> PreparePlan:
    """The prepare plan: located, fingerprinted inputs (fails on missing files before anything is written).

    The user maps are resolved here too, so a bad ``prepare.map`` / ``augment.map`` fails
    before the output directory is made.
    """
    check_spec(cfg.prepare.map, "prepare.map")
    check_spec(cfg.augment.map, "augment.map")
    return cfg.dataset.plan(cfg)


def run_data_stage(stage: str, cfg: Config, out: Path, executor: str, address: str | None,
                   force: bool, plan: PreparePlan | None = None) -> dict[str, Any] | None:
    """Run prepare or augment unless up to date; returns the indexes (None when skipped).

    ``plan`` is the prepare plan when the caller made it already (``run_stages`` plans
    before creating the output directory).
    """
    dataset = cfg.dataset
    if stage == "prepare":
        plan = plan or plan_prepare(cfg)
        fp = fingerprint(stage, _VERSION, fmt.SUPPORTED_VERSIONS[-1], list(plan.inputs),
                         _fingerprint_config(cfg, ("seed", "dataset", "prepare")),
                         *_map_identity(cfg.prepare.map, "prepare.map"))
        splits = list(plan.splits)
    else:
        prep_index = stage_dir(out, "prepare") / "train" / fmt.INDEX_NAME
        if not prep_index.exists():
            raise ShardtrainError(f"{prep_index}: missing; run --stage prepare first")
        prep_fp = json.loads(prep_index.read_text())["fingerprint"]
        fp = fingerprint(stage, _VERSION, prep_fp, _fingerprint_config(cfg, ("seed", "augment")),
                         *_map_identity(cfg.augment.map, "augment.map"))
        splits = ["train"]
    target = stage_dir(out, stage)
    if not force and is_up_to_date(target, splits, fp):
        log.info("stage %s: up to date (%s), skipped", stage, target)
        return None
    if executor == "ray":
        from shardtrain.stages.ray_exec import ensure_ray

        ensure_ray(address)
    if stage == "prepare":
        jobs = dataset.prepare_jobs(cfg, plan, executor)
    else:
        jobs = dataset.augment_jobs(cfg, stage_dir(out, "prepare"))
    section = cfg.prepare if stage == "prepare" else cfg.augment
    jobs = [wrap_job(job, section.map, section.map_options, stage, cfg.seed) for job in jobs]
    indexes = run_stage(
        stage, jobs, target,
        rows_per_shard=cfg.prepare.rows_per_shard, batch_rows=cfg.prepare.batch_rows,
        max_reject_fraction=cfg.prepare.max_reject_fraction, executor=executor, fp=fp,
        config=cfg.model_dump(mode="json"), dataset=dataset.name,
    )
    if stage == "augment":
        dataset.after_augment(cfg, target, indexes)
    return indexes

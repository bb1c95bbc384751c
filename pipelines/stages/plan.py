"""Plan and run the data stages (prepare, augment) of a config through its dataset class.

The dataset class (``cfg.dataset``, one registered kind per ``dataset.name``) plans
its splits into a typed :class:`~shardtrain.datasets.base.PreparePlan` and builds the
split jobs; the runner applies their pure batch functions shard by shard. A data stage
whose output indexes already carry the same fingerprint is skipped.

A user map (``prepare.map`` / ``augment.map``, ``shardtrain.stages.usermap``) wraps every
split job of its stage; its spec, options and the sha256 of its module's file are in the
stage fingerprint, and a bad spec fails in :func:`plan_prepare`, before any output exists.

The output root ``out`` is a local directory or a URI (``s3://bucket/prefix``): the stage
directories are joined with ``shardtrain.shards.storage`` and written through it, and
:func:`apply_storage` puts the config's ``storage`` section into the environment that the
storage layer, Ray's workers and the training ranks read.
"""

from __future__ import annotations

import logging
import os
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import fingerprint
from shardtrain.shards import cache, storage
from shardtrain.shards import format as fmt
from shardtrain.shards.reader import index_fingerprint
from shardtrain.stages.context import PreparePlan
from shardtrain.stages.context import StageConfig as Config
from shardtrain.stages.runner import is_up_to_date, run_stage
from shardtrain.stages.usermap import check_spec, source_identity, wrap_job

log = logging.getLogger("shardtrain")
_VERSION = version("shardtrain")  # in every fingerprint: a new release re-runs the stages (no root import here)


def stage_dir(out: storage.Location, stage: str) -> storage.Location:
    """Where a data stage writes its splits: ``O/shards/<stage>/`` (a ``Path``, or a URI for a URI ``out``)."""
    return storage.join(out, "shards", stage)


def apply_storage(cfg: Config) -> None:
    """Export the config's ``storage`` section to the environment the storage layer reads.

    ``endpoint_override`` becomes ``SHARDTRAIN_S3_ENDPOINT``, ``region`` ``AWS_REGION``.

    Called before Ray starts or training forks ranks, so every process that opens an
    ``s3://`` location (a local Ray's workers inherit this environment; the tasks of a
    remote cluster get it in their task) reaches the same store. A value set in the config
    wins over the environment; credentials never go through here.
    """
    section = getattr(cfg, "storage", None)
    if section is None:
        return
    if section.endpoint_override:
        os.environ[storage.ENDPOINT_ENV] = section.endpoint_override
    if section.region:
        os.environ["AWS_REGION"] = section.region


class StoreDir(str):
    """A URI string that the dataset kinds can join with ``/`` as they join a ``Path``.

    The kinds' ``augment_jobs`` were written for a local ``prepare_dir``
    (``prepare_dir / "train"``, ``(...).is_file()``, ``.read_text()``); this keeps them
    working on a URI through ``shardtrain.shards.storage``.
    """

    def __truediv__(self, part: str) -> StoreDir:
        """``storage.join(self, part)``, still a ``StoreDir``."""
        return StoreDir(storage.join(str(self), str(part)))

    def is_file(self) -> bool:
        """Whether the object exists."""
        return storage.file_size(str(self)) is not None

    def exists(self) -> bool:
        """Whether the object or prefix exists."""
        return storage.exists(str(self))

    def read_text(self, encoding: str = "utf-8") -> str:
        """The object's content as text."""
        return storage.read_bytes(str(self)).decode(encoding)

    def read_bytes(self) -> bytes:
        """The object's content."""
        return storage.read_bytes(str(self))


def _kind_dir(location: storage.Location) -> Any:
    """``location`` as the dataset kinds take it: a ``Path`` when local, else a ``StoreDir``."""
    path = storage.local_path(location)
    return path if path is not None else StoreDir(str(location))


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


def run_data_stage(stage: str, cfg: Config, out: storage.Location, executor: str, address: str | None,
                   force: bool, plan: PreparePlan | None = None) -> dict[str, Any] | None:
    """Run prepare or augment unless up to date; returns the indexes (None when skipped).

    ``plan`` is the prepare plan when the caller made it already (``run_stages`` plans
    before creating the output directory). ``out`` is a local directory or a URI.
    """
    dataset = cfg.dataset
    if stage == "prepare":
        plan = plan or plan_prepare(cfg)
        fp = fingerprint(stage, _VERSION, fmt.SUPPORTED_VERSIONS[-1], list(plan.inputs),
                         _fingerprint_config(cfg, ("seed", "dataset", "prepare")),
                         *_map_identity(cfg.prepare.map, "prepare.map"))
        splits = list(plan.splits)
    else:
        prep_fp = index_fingerprint(storage.join(stage_dir(out, "prepare"), "train"))
        if prep_fp is None:
            prep_index = storage.join(stage_dir(out, "prepare"), "train", fmt.INDEX_NAME)
            raise ShardtrainError(f"{storage.redact(prep_index)}: missing; run --stage prepare first")
        fp = fingerprint(stage, _VERSION, prep_fp, _fingerprint_config(cfg, ("seed", "augment")),
                         *_map_identity(cfg.augment.map, "augment.map"))
        splits = ["train"]
    target = stage_dir(out, stage)
    if not force and is_up_to_date(target, splits, fp):
        log.info("stage %s: up to date (%s), skipped", stage, storage.redact(target))
        return None
    if executor == "ray":
        from shardtrain.stages.ray_exec import ensure_ray

        ensure_ray(address)
    if stage == "prepare":
        jobs = dataset.prepare_jobs(cfg, plan, executor)
    else:
        jobs = dataset.augment_jobs(cfg, _kind_dir(stage_dir(out, "prepare")))
    section = cfg.prepare if stage == "prepare" else cfg.augment
    jobs = [wrap_job(job, section.map, section.map_options, stage, cfg.seed) for job in jobs]
    indexes = run_stage(
        stage, jobs, target,
        rows_per_shard=cfg.prepare.rows_per_shard, batch_rows=cfg.prepare.batch_rows,
        max_reject_fraction=cfg.prepare.max_reject_fraction, executor=executor, fp=fp,
        config=cfg.model_dump(mode="json"), dataset=dataset.name,
    )
    if stage == "augment":
        _after_augment(cfg, target, indexes)
    return indexes


def _after_augment(cfg: Config, target: storage.Location, indexes: dict[str, Any]) -> None:
    """The kind's after-augment hook (the preview); on a store it renders locally, then uploads.

    For a URI ``target`` the hook gets a temporary stage directory whose ``train/`` links
    the split's verified cache copy; whatever new file it writes there (``_preview.png``)
    is uploaded beside the shards with ``storage.write_bytes``.
    """
    local = storage.local_path(target)
    if local is not None:
        cfg.dataset.after_augment(cfg, local, indexes)
        return
    split = storage.join(target, "train")
    entry = cache.local_split(split)
    with tempfile.TemporaryDirectory(prefix="shardtrain-augment-") as tmp:
        work = Path(tmp) / "train"
        work.mkdir()
        linked = set()
        for item in entry.iterdir():
            (work / item.name).symlink_to(item)
            linked.add(item.name)
        cfg.dataset.after_augment(cfg, Path(tmp), indexes)
        for item in sorted(work.iterdir()):
            if item.name not in linked and item.is_file():
                storage.write_bytes(storage.join(split, item.name), item.read_bytes())
                log.info("augment: uploaded %s", storage.redact(storage.join(split, item.name)))

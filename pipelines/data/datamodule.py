"""``ShardDataModule``: feed Arrow shards to Lightning with one gather per batch.

``setup()`` memory-maps each split's shards once and, by ``device_cache``, keeps the
features resident on the accelerator (``gpu``), in RAM (``cpu``) or as mapped views
(``none``); ``auto`` picks the first that fits. Every epoch has one permutation that
depends only on ``(seed, epoch)``; rank ``r`` of ``W`` takes the contiguous slice
``[r * P, (r + 1) * P)`` with ``P = ceil(N / W)``, the permutation padded by repeating its
first entries (padding rows carry ``w = 0``), so every rank takes the same number of
steps and every sample is seen exactly once per epoch. The batch contract is in the
class docstring. A split given as a URI (``s3://bucket/out/shards/prepare/train``) is
copied once into the local shard cache (``shardtrain.shards.cache``, sha256-verified) by
each process that reads it and memory-mapped from there, so the feed is the local one.

Resuming: ``state_dict()`` is ``{"epoch", "batches_done", "seed", ...}``; Lightning saves it
in checkpoints (and the train iterable's, which is the same state) and restores it, and
the next training pass skips the batches already done in that epoch.

Audit (``audit=True``): each rank writes ``data_audit.rank{r}.json`` (+ ``.npz`` with the
sample ids it saw per epoch) at the end of ``fit``; after a barrier rank 0 merges them
into ``data_audit.json``. ``merge_audit(audit_dir)`` does the merge on its own (for
launchers that run one Trainer per worker, call it on rank 0 after fit).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch

from shardtrain.data.batching import (
    EpochPlan,
    ShardBatches,
    SplitData,
    TrainBatches,
    carve_rows,
    check_labels,
    estimate_bytes,
    per_rank_rows,
    plan_epoch,
)
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import ShardSet, local_split
from shardtrain.shards.reader import read_index

log = logging.getLogger(__name__)

AUDIT_NAME = "data_audit.json"


DEVICE_CACHES = ("auto", "gpu", "cpu", "none")
AUTO_BATCH_MAX, AUTO_BATCH_MIN, AUTO_MIN_STEPS = 512, 16, 100  # data.batch_size: auto


def steps_per_epoch(rows: int, batch_size: int, ranks: int = 1) -> int:
    """Optimizer steps per epoch: each of ``ranks`` ranks takes ``ceil(ceil(rows / ranks) / batch_size)``."""
    per_rank = -(-int(rows) // max(1, int(ranks)))
    return -(-per_rank // int(batch_size))


def auto_batch_size(rows: int, ranks: int = 1) -> int:
    """``data.batch_size: auto``: the largest power of two <= 512 giving >= 100 optimizer steps per epoch.

    Large batches waste small data: 3,000 rows at 512 a batch are 6 steps an epoch, too few
    for Adam to get anywhere in 10 epochs. The batch halves from 512 until an epoch has
    at least ``AUTO_MIN_STEPS`` steps, but never goes below ``AUTO_BATCH_MIN`` (16): below
    that a step costs as much as a larger one and the gradient gets noisy. Example:
    ``auto_batch_size(8000) == 64`` (125 steps), ``auto_batch_size(60000) == 512``.
    """
    size = AUTO_BATCH_MAX
    while size > AUTO_BATCH_MIN and steps_per_epoch(rows, size, ranks) < AUTO_MIN_STEPS:
        size //= 2
    return size


def training_rows(train: str | Path, val: str | Path | None, val_fraction: float) -> int:
    """Rows the training split feeds per epoch, from its index (less the carved ``val_fraction`` without ``val``).

    The carve is by source id (see ``carve_rows``), so the count is approximate there; the
    auto batch size only needs its order of magnitude.
    """
    rows = int(read_index(train).get("rows", 0))
    if val is None and val_fraction > 0:
        rows -= int(round(rows * float(val_fraction)))
    return max(rows, 1)


def describe_batch_size(batch_size: int, rows: int, ranks: int = 1) -> str:
    """The log line of a resolved auto batch size: ``data.batch_size auto -> 64 (8,000 training rows, 125 steps per epoch)``."""
    on = f", {ranks} ranks" if ranks > 1 else ""
    return (f"data.batch_size auto -> {batch_size} ({rows:,} training rows{on}, "
            f"{steps_per_epoch(rows, batch_size, ranks)} steps per epoch)")


def _positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, else a one-line ShardtrainError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ShardtrainError(f"ShardDataModule: {name} must be an integer >= 1, got {value!r}")
    return int(value)


class ShardDataModule(pl.LightningDataModule):
    """Train/val/test shard directories (as written by the prepare/augment stages) fed as dict batches.

    Arguments are shard directories and plain keywords: ``batch_size``/``eval_batch_size``
    (rows per training/evaluation batch, per rank), ``device_cache`` (``auto|gpu|cpu|none``),
    ``val_fraction`` (without ``val``: carve that fraction of the *sources* of ``train`` into
    a validation split, so augmented copies never leak; 0 = none), ``seed`` (permutations
    and carving), ``steps_per_call`` (batches per training item, below), ``batch_augment``
    (optional ``fn(x, step) -> x`` applied on the device to dense training ``x``; ``step``
    counts batches from epoch 0, so it is the same on resume), ``audit``/``audit_dir``,
    ``verify`` (re-hash every shard). ``rank``/``world_size``/``device`` override what an
    attached Trainer says (tests simulate DDP ranks in one process with them). Bad values
    raise a one-line ``ShardtrainError``. ``from_config`` builds one from a ``DataConfig``.

    **The batch contract.** Every batch is a dict, all on one device:

    - ``x``: (B, F) float32, already scaled (``stored * scale + offset``) and flattened, or
      a ``shardtrain.models.inputs.SparseBatch`` (ids, offsets, weights; an ``EmbeddingBag``
      input) for sparse features (``feature["kind"] == "sparse"``).
    - ``y``: (B,) int64 class labels (float32 for regression) when the shards have one
      ``label`` column, else ``{task: (B,)}`` for ``label_<task>`` columns. ``-1`` (NaN for
      regression) means missing: the row has no label for that task and must not count.
    - ``w``: (B,) float32 sample weights (the shards' ``weight`` column, else 1). Under DDP
      the last rank's slice is padded with repeated rows so that every rank takes the same
      number of steps (an unequal count deadlocks the gradient all-reduce); those padding
      rows have ``w = 0``. **A loss you write yourself must weight by ``w``** (e.g.
      ``(loss_per_row * w).sum() / w.sum().clamp_min(1)``), and evaluation metrics must drop
      or weight rows with ``w = 0``, else padding rows count twice and results depend on
      the number of ranks.
    - ``sample_id``, ``source_id``: (B,) int64 (an augmented copy's ``source_id`` is its
      original's); ``unit_weights``: a Python bool, true when every ``w`` is 1 and every row
      is labelled (a plain mean loss is then exact).

    Training batches are shuffled per epoch; evaluation batches are not, and are split
    across ranks the same way (padded eval rows have ``w = 0``). With ``steps_per_call = k >
    1`` each training item is a *list* of up to ``k`` consecutive batches as above (the last
    item of an epoch may be shorter) and the LightningModule takes one optimizer step per
    batch of the list (``ShardTrainModule`` does); ``k = 1`` yields plain batch dicts.

    Example::

        dm = ShardDataModule("out/shards/prepare/train", test="out/shards/prepare/test", batch_size=256)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu")
        trainer.fit(my_module, datamodule=dm)  # my_module's loss weights by batch["w"]
    """

    def __init__(self, train: str | Path | None = None, val: str | Path | None = None,
                 test: str | Path | None = None, *, batch_size: int = 512, eval_batch_size: int = 4096,
                 device_cache: str = "auto", val_fraction: float = 0.1, seed: int = 0, steps_per_call: int = 1,
                 batch_augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None, audit: bool = False,
                 audit_dir: str | Path | None = None, verify: bool = False, rank: int | None = None,
                 world_size: int | None = None, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.batch_size = _positive_int("batch_size", batch_size)
        self.eval_batch_size = _positive_int("eval_batch_size", eval_batch_size)
        self.steps_per_call = _positive_int("steps_per_call", steps_per_call)
        if device_cache not in DEVICE_CACHES:
            raise ShardtrainError(f"ShardDataModule: device_cache must be one of {', '.join(DEVICE_CACHES)}, "
                                  f"got {device_cache!r}")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise ShardtrainError(f"ShardDataModule: val_fraction must be a number in [0, 1), got {val_fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ShardtrainError(f"ShardDataModule: seed must be an integer, got {seed!r}")
        if batch_augment is not None and not callable(batch_augment):
            raise ShardtrainError(f"ShardDataModule: batch_augment must be callable fn(x, step) -> x, got {batch_augment!r}")
        given = {"train": train, "val": val, "test": test}
        if all(v is None for v in given.values()):
            raise ShardtrainError("ShardDataModule: give at least one shard directory (train, val or test)")
        # A URI (s3://...) is read through the local shard cache: this process copies the split
        # once (sha256-verified, reused while its index is unchanged) and memory-maps the copy.
        self.dirs = {k: local_split(v) for k, v in given.items() if v is not None}
        self.device_cache, self.val_fraction, self.audit = device_cache, float(val_fraction), bool(audit)
        self.seed, self.verify, self.batch_augment = int(seed), bool(verify), batch_augment
        self.audit_dir = Path(audit_dir) if audit_dir is not None else None
        self._rank, self._world = rank, world_size
        self._device = torch.device(device) if device is not None else None
        self._carve = "val" not in self.dirs and "train" in self.dirs and self.val_fraction > 0
        self._sets: dict[str, ShardSet] = {}
        self._splits: dict[str, SplitData] = {}
        self._carved: tuple[np.ndarray, np.ndarray] | None = None
        self.carve_report: dict[str, int] | None = None  # counts of the carved validation split
        self.cache_modes: dict[str, str] = {}  # split -> the device_cache it got
        self.padding: dict[str, int] = {}  # split -> padding rows per epoch over all ranks
        self._epoch, self._batches_done, self._started = 0, 0, False
        self._pending: dict[str, Any] | None = None
        self._epoch_override: int | None = None
        self._records: list[dict[str, Any]] = []  # audit, one per (partial) training pass

    @classmethod
    def from_config(cls, train: str | Path | None, val: str | Path | None, test: str | Path | None, data: Any,
                    **kwargs: Any) -> ShardDataModule:
        """One built from a config's ``data`` section (reads only its attribute names); ``kwargs`` as ``__init__``."""
        options = {k: getattr(data, k) for k in ("batch_size", "eval_batch_size", "device_cache", "val_fraction", "audit")}
        options = {**options, **kwargs}
        if options["batch_size"] == "auto":  # data.batch_size: auto, resolved from the training rows and ranks
            if train is None:
                raise ShardtrainError("ShardDataModule: batch_size 'auto' needs the train split (its rows size it)")
            rows = training_rows(train, val, options["val_fraction"])
            ranks = int(options.get("world_size") or 1)
            options["batch_size"] = auto_batch_size(rows, ranks)
            log.info("%s", describe_batch_size(options["batch_size"], rows, ranks))
        return cls(train, val, test, **options)

    # ------------------------------------------------------------------ what the train stage checks
    def _index(self) -> dict[str, Any]:
        """The index of the first split given (features and labels agree across splits)."""
        for name in ("train", "val", "test"):
            if name in self.dirs:
                return read_index(self.dirs[name])
        raise ShardtrainError("ShardDataModule: no shard directory given")

    @property
    def feature(self) -> dict[str, Any]:
        """The index description of ``x``: dtype, shape, scale, offset, kind (dense|sparse), dim."""
        return dict(self._index().get("features", {}).get("x", {}))

    @property
    def feature_dim(self) -> int:
        """Model input width: ``prod(shape)`` for dense features, the bucket count ``dim`` for sparse."""
        feat = self.feature
        if feat.get("kind") == "sparse":
            return int(feat["dim"])
        return int(np.prod(feat["shape"])) if feat.get("shape") else int(feat["dim"])

    @property
    def labels(self) -> dict[str, dict[str, Any]]:
        """Label columns (``label`` or ``label_<task>``) and their descriptions (``classes`` None = regression)."""
        index = self._index()
        declared = index.get("labels", {})
        names = [c["name"] for c in index.get("schema", [])]
        return {c: dict(declared.get(c, {})) for c in names if c == "label" or c.startswith("label_")}

    @property
    def padding_per_epoch(self) -> int:
        """Training padding rows per epoch over all ranks (``per_rank * world - N``)."""
        return self.padding.get("train", 0)

    # ------------------------------------------------------------------ setup
    def _context(self) -> tuple[int, int, torch.device, int]:
        """(rank, world size, batch device, processes per node) from the overrides or the Trainer."""
        t = self.trainer
        rank = self._rank if self._rank is not None else (t.global_rank if t is not None else 0)
        world = self._world if self._world is not None else (t.world_size if t is not None else 1)
        device = self._device or (t.strategy.root_device if t is not None else torch.device("cpu"))
        local = t.num_devices if t is not None else 1
        if not 0 <= rank < world:
            raise ShardtrainError(f"ShardDataModule: rank {rank} outside world size {world}")
        return rank, world, device, local

    def _shardset(self, name: str) -> ShardSet:
        """The memory-mapped shard set of a split directory, opened and label-checked once."""
        if name not in self._sets:
            ss = ShardSet(self.dirs[name], verify=self.verify)
            check_labels(ss)
            self._sets[name] = ss
        return self._sets[name]

    def _cache_for(self, ss: ShardSet, rows: np.ndarray | None, device: torch.device, local: int) -> str:
        """Resolve ``device_cache`` for one split (``auto``: gpu < 50% free, cpu < 25% RAM, else none)."""
        mode = self.device_cache
        if mode == "gpu" and device.type == "cpu":
            log.warning("device_cache=gpu but training runs on the CPU: caching in RAM instead")
            return "cpu"
        if mode != "auto":
            return mode
        need = estimate_bytes(ss, rows)
        if device.type == "cuda" and need < 0.5 * torch.cuda.mem_get_info(device)[0]:
            return "gpu"
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return "cpu" if need * local < 0.25 * ram else "none"

    def _open(self, name: str) -> None:
        """Build split ``name`` (once): from its directory, or carved out of train."""
        if name in self._splits or not self.has_split(name):
            return
        rank, world, device, local = self._context()
        rows = None
        if self._carve and name in ("train", "val"):
            ss = self._shardset("train")
            if self._carved is None:
                train_rows, val_rows, self.carve_report = carve_rows(ss, self.seed, self.val_fraction)
                self._carved = (train_rows, val_rows)
                log.info("carved validation from %s: %s", self.dirs["train"], self.carve_report)
            rows = self._carved[0 if name == "train" else 1]
        else:
            ss = self._shardset(name)
        mode = self._cache_for(ss, rows, device, local)
        split = SplitData(ss, rows, mode, device, name)
        self._splits[name] = split
        self.cache_modes[name] = mode
        self.padding[name] = per_rank_rows(split.rows, world) * world - split.rows

    def setup(self, stage: str | None = None) -> None:
        """Map the splits this stage needs (fit: train+val, validate: val, test/predict: test)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for name in wanted.get(stage or "", ("train", "val", "test")):
            self._open(name)

    def has_split(self, name: str) -> bool:
        """Whether split ``name`` exists (a directory, or val carved from train); builds nothing."""
        return name in self.dirs or (self._carve and name == "val")

    def split(self, name: str) -> SplitData:
        """The built split ``name`` (after ``setup``)."""
        self._open(name)
        if name not in self._splits:
            raise ShardtrainError(f"ShardDataModule: no {name} split (no directory given and none carved)")
        return self._splits[name]

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> TrainBatches:
        """Shuffled training batches of this rank (stateful: resumes mid-epoch).

        With ``steps_per_call > 1`` each item is a list of that many consecutive batches
        (``ShardTrainModule`` takes one optimizer step per batch of the list); every rank
        has the same number of batches, so the same groups.
        """
        rank, world, _, _ = self._context()
        return TrainBatches(self.split("train"), self.batch_size, rank, world, owner=self,
                            steps_per_call=self.steps_per_call, augment=self.batch_augment)

    def _eval(self, name: str) -> ShardBatches | list:
        """Unshuffled batches of an evaluation split, or ``[]`` (no loader) when there is none."""
        if not self.has_split(name):
            return []
        rank, world, _, _ = self._context()
        return ShardBatches(self.split(name), self.eval_batch_size, rank, world)

    def val_dataloader(self) -> ShardBatches | list:
        """Validation batches (the given split or the carved one); padded rows have ``w = 0``."""
        return self._eval("val")

    def test_dataloader(self) -> ShardBatches | list:
        """Test batches; padded rows have ``w = 0``."""
        return self._eval("test")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Return batches that are already on ``device`` as they are (a resident split's always are).

        Lightning's default walks every tensor of the batch (or of each batch of a group)
        on every call; our batches are gathered wholly on one device, so one column tells.
        """
        first = batch[0] if isinstance(batch, list) and batch else batch
        w = first.get("w") if isinstance(first, dict) else None
        if isinstance(w, torch.Tensor) and w.device == torch.device(device):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ------------------------------------------------------------------ epochs and state
    def set_epoch(self, epoch: int) -> None:
        """Force the epoch of the next training pass (for use without a Trainer)."""
        self._epoch_override = int(epoch)

    def _pick_epoch(self, steps: int) -> int:
        """The epoch of a starting pass: the Trainer's, else resumed/next (manual iteration)."""
        if self._epoch_override is not None:
            epoch, self._epoch_override = self._epoch_override, None
            return epoch
        if self.trainer is not None:
            return int(self.trainer.current_epoch)
        if self._pending is not None:
            p = self._pending
            return int(p["epoch"]) if int(p["batches_done"]) < steps else int(p["epoch"]) + 1
        return self._epoch + 1 if self._started else 0

    def _begin_train_epoch(self, it: ShardBatches) -> tuple[EpochPlan, Any]:
        """Driver of a training pass: plan the epoch, apply a pending resume, set up the audit."""
        epoch = self._pick_epoch(it.steps)
        plan = plan_epoch(it.split.rows, it.batch_size, it.rank, it.world, self.seed, epoch, shuffle=True)
        pending, self._pending = self._pending, None
        if pending is not None and int(pending["epoch"]) == epoch:
            plan.start = min(int(pending["batches_done"]), plan.steps)
            if 0 < plan.start < plan.steps:
                saved = (pending.get("world_size", it.world), pending.get("batch_size", it.batch_size),
                         pending.get("steps_per_call", 1))
                if saved != (it.world, it.batch_size, it.steps_per_call):
                    # Lightning counts the epoch's steps done in items; a different grouping
                    # would make its count and ours disagree.
                    raise ShardtrainError(
                        f"cannot resume mid-epoch {epoch} (batch {plan.start}): the checkpoint ran with world size "
                        f"{saved[0]}, batch size {saved[1]} and steps_per_call {saved[2]}, this run has {it.world}, "
                        f"{it.batch_size} and {it.steps_per_call}; resume from an end-of-epoch checkpoint instead"
                    )
        t = self.trainer
        if t is not None and t.max_steps is not None and t.max_steps > 0:
            # Hand out no batch past max_steps: with several steps per call Lightning would
            # overshoot, and a batch fetched but never trained must not count as done.
            plan.stop = plan.start + max(0, int(t.max_steps) - int(t.global_step))
        self._finish_records()
        self._epoch, self._batches_done, self._started = epoch, plan.start, True
        record = None
        if self.audit:
            record = {"epoch": epoch, "start_batch": plan.start, "end_batch": plan.start, "plan": plan, "split": it.split}
            self._records.append(record)

        def on_batch(done: int) -> None:  # integers only: no device sync per step
            self._batches_done = done
            if record is not None:
                record["end_batch"] = done

        return plan, on_batch

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batches_done", "seed", "world_size", "batch_size", "steps_per_call"}`` of the training pass."""
        _, world, _, _ = self._context()
        return {"epoch": self._epoch, "batches_done": self._batches_done, "seed": self.seed,
                "world_size": world, "batch_size": self.batch_size, "steps_per_call": self.steps_per_call}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state; the next training pass of that epoch skips the batches already done."""
        self.seed = int(state_dict["seed"])
        self._epoch, self._batches_done = int(state_dict["epoch"]), int(state_dict["batches_done"])
        self._pending = dict(state_dict)
        self._started = True

    # ------------------------------------------------------------------ audit
    def _finish_records(self) -> None:
        """Turn in-progress audit records into sample ids (one CPU gather per record)."""
        for rec in self._records:
            plan: EpochPlan | None = rec.pop("plan", None)
            if plan is None:
                continue
            bs = self.batch_size
            sl = slice(rec["start_batch"] * bs, rec["end_batch"] * bs)
            rows, pad = plan.indices[sl], plan.padding[sl]
            rec["ids"] = rec.pop("split").sample_id[rows[~pad].numpy()]
            rec["padding"] = int(pad.sum())
            rec["steps"] = rec["end_batch"] - rec["start_batch"]

    def write_audit(self) -> Path | None:
        """Write this rank's ``data_audit.rank{r}.json`` (+ ``.npz`` of ids); None without an audit dir."""
        if not self.audit or self.audit_dir is None:
            return None
        self._finish_records()
        rank, world, _, _ = self._context()
        self.audit_dir.mkdir(parents=True, exist_ok=True)
        train = self._splits.get("train")
        meta = {"rank": rank, "world_size": world, "seed": self.seed, "rows": train.rows if train else 0,
                "batch_size": self.batch_size, "padding_per_epoch": self.padding_per_epoch,
                "passes": [{k: v for k, v in r.items() if k != "ids"} for r in self._records]}
        np.savez(self.audit_dir / f"data_audit.rank{rank}.npz", **{f"p{i}": r["ids"] for i, r in enumerate(self._records)})
        path = self.audit_dir / f"data_audit.rank{rank}.json"
        path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return path

    def teardown(self, stage: str) -> None:
        """After ``fit``: write this rank's audit, wait for every rank, merge on rank 0."""
        if stage != "fit" or self.write_audit() is None:
            return
        rank, world, _, _ = self._context()
        if self.trainer is not None and world > 1:
            self.trainer.strategy.barrier("shardtrain_data_audit")
        if rank == 0:
            report = merge_audit(self.audit_dir)
            log.info("data audit: ok=%s (%s)", report["ok"], self.audit_dir / AUDIT_NAME)

    def on_exception(self, exception: BaseException) -> None:
        """A failed fit still leaves this rank's (partial) audit behind; no barrier, no merge."""
        self.write_audit()


def load_audit(audit_dir: str | Path) -> list[dict[str, Any]]:
    """The per-rank audit files of a directory, each with ``passes[i]["ids"]`` loaded."""
    audit_dir = Path(audit_dir)
    ranks = []
    for path in sorted(audit_dir.glob("data_audit.rank*.json")):
        meta = json.loads(path.read_text(encoding="utf-8"))
        with np.load(path.with_suffix(".npz")) as ids:
            for i, p in enumerate(meta["passes"]):
                p["ids"] = ids[f"p{i}"]
        ranks.append(meta)
    if not ranks:
        raise ShardtrainError(f"{audit_dir}: no data_audit.rank*.json files")
    return sorted(ranks, key=lambda m: m["rank"])


def merge_audit(audit_dir: str | Path) -> dict[str, Any]:
    """Merge the rank files into ``data_audit.json``: per epoch steps per rank, seen once/duplicated/missing.

    ``ok`` is true when every epoch has equal steps on every rank and every sample of the
    split exactly once (an interrupted epoch therefore reports its missing samples).
    """
    ranks = load_audit(audit_dir)
    world = ranks[0]["world_size"]
    epochs = sorted({p["epoch"] for m in ranks for p in m["passes"]})
    out: dict[str, Any] = {"world_size": world, "ranks_found": [m["rank"] for m in ranks],
                           "rows": ranks[0]["rows"], "padding_per_epoch": ranks[0]["padding_per_epoch"], "epochs": []}
    ok = len(ranks) == world
    for epoch in epochs:
        steps = [sum(p["steps"] for p in m["passes"] if p["epoch"] == epoch) for m in ranks]
        ids = np.concatenate([p["ids"] for m in ranks for p in m["passes"] if p["epoch"] == epoch])
        _, counts = np.unique(ids, return_counts=True)
        entry = {"epoch": epoch, "steps_per_rank": steps, "seen_once": int((counts == 1).sum()),
                 "duplicated": int((counts > 1).sum()), "missing": int(out["rows"] - len(counts)),
                 "padding": int(sum(p["padding"] for m in ranks for p in m["passes"] if p["epoch"] == epoch))}
        ok = ok and len(set(steps)) == 1 and entry["duplicated"] == 0 and entry["missing"] == 0
        out["epochs"].append(entry)
    out["ok"] = bool(ok)
    path = Path(audit_dir) / AUDIT_NAME
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return out


__all__ = ["AUDIT_NAME", "ShardDataModule", "load_audit", "merge_audit"]

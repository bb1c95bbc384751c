"""Batching primitives behind ``ShardDataModule``: split storage, gathers and epoch plans.

A split is held in one of three ways (``data.device_cache``): ``gpu`` (every column
resident on the accelerator, gathered with ``index_select`` there), ``cpu`` (contiguous
tensors in RAM) or ``none`` (the memory-mapped shard views, gathered per batch with one
``np.take`` per shard). Whatever the storage, a batch is one vectorised gather of the
rows a rank takes for that step, and those rows come from an epoch plan that depends
only on ``(seed, epoch, rank, world)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shardtrain.models.inputs import SparseBatch
from shardtrain.core.errors import ShardtrainError
from shardtrain.core.seeding import as_uint64, mix64, seed_array, to_unit
from shardtrain.shards import ShardSet

_RESIDENT_CHUNK = 1 << 16  # rows copied per step while building a resident split
_BLOCK_ROWS = 4096  # dense rows gathered at once by an iterator (sliced into batches)


# ----------------------------------------------------------------------------- hashing
def unit_hash(seed: int, keys: np.ndarray, salt: int = 0) -> np.ndarray:
    """A float64 in [0, 1) per key, a pure function of (seed, salt, key)."""
    base = mix64(seed_array(seed) ^ mix64(seed_array(salt)))
    return to_unit(mix64(as_uint64(keys) ^ base))


def epoch_seed(seed: int, epoch: int) -> int:
    """The torch generator seed of an epoch's permutation: a hash of (seed, epoch)."""
    h = mix64(mix64(seed_array(seed)) ^ seed_array(epoch))
    return int(h[0] & np.uint64(2**63 - 1))


# ----------------------------------------------------------------------------- epoch plans
@dataclass
class EpochPlan:
    """The rows one rank takes in one epoch, in order, and where iteration starts.

    ``indices`` (per_rank,) int64 and ``padding`` (per_rank,) bool live on CPU; a padding
    row repeats a real row so that every rank has the same count, and yields ``w = 0``.
    """

    epoch: int
    indices: torch.Tensor
    padding: torch.Tensor
    steps: int
    start: int = 0
    stop: int | None = None  # iteration ends before this batch (a max_steps budget); None = steps

    @property
    def end(self) -> int:
        """The batch iteration stops before: ``stop`` capped at ``steps``."""
        return self.steps if self.stop is None else max(self.start, min(self.stop, self.steps))


def per_rank_rows(n: int, world: int) -> int:
    """Rows each rank takes per epoch: ``ceil(n / world)`` (the last ranks get padding)."""
    return -(-n // world) if n else 0


def plan_epoch(n: int, batch_size: int, rank: int, world: int, seed: int, epoch: int, shuffle: bool) -> EpochPlan:
    """Rank ``rank``'s contiguous slice of the epoch's order, padded to equal length.

    The order is ``randperm(n)`` from a CPU generator seeded by ``epoch_seed(seed, epoch)``
    (so it does not depend on the device), or ``arange(n)`` without shuffling. The first
    ``per_rank * world - n`` entries are repeated at the end and marked as padding.
    """
    per_rank = per_rank_rows(n, world)
    if shuffle:
        gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=gen)  # (n,)
    else:
        order = torch.arange(n, dtype=torch.int64)
    pad = per_rank * world - n
    if pad:
        order = torch.cat([order, order[torch.arange(pad) % n]])  # (per_rank * world,)
    is_pad = torch.arange(per_rank * world) >= n
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    return EpochPlan(epoch, order[sl].clone(), is_pad[sl].clone(), math.ceil(per_rank / batch_size))


# ----------------------------------------------------------------------------- ragged / sharded gathers
def ragged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions of the ranges ``[starts[i], starts[i] + lengths[i])``, concatenated: (sum(lengths),)."""
    out_off = np.cumsum(lengths) - lengths  # (B,) exclusive prefix sum
    return np.repeat(starts - out_off, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def locate(shard_starts: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, local row) of global rows; ``shard_starts`` is (S + 1,) with empty shards allowed."""
    shard = np.searchsorted(shard_starts, rows, side="right") - 1  # last shard starting at or before the row
    return shard, rows - shard_starts[shard]


def take_rows(views: list[np.ndarray], shard_starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Gather global ``rows`` from per-shard arrays, in order: one ``np.take`` per touched shard."""
    shard, local = locate(shard_starts, rows)
    out = np.empty((len(rows), *views[0].shape[1:]), dtype=views[0].dtype)
    for s in np.unique(shard):
        m = shard == s
        out[m] = np.take(views[s], local[m], axis=0)
    return out


def take_ragged(parts: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]], shard_starts: np.ndarray,
                rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Gather variable-length rows from per-shard ``(starts, lengths, [values...])``.

    Returns ``offsets`` (B + 1,) int64 and one compact values array per value column, the
    rows in the order of ``rows``; per shard one vectorised source/destination mapping.
    """
    shard, local = locate(shard_starts, rows)
    lengths = np.zeros(len(rows), dtype=np.int64)
    starts = np.zeros(len(rows), dtype=np.int64)
    for s in np.unique(shard):
        m = shard == s
        starts[m] = parts[s][0][local[m]]
        lengths[m] = parts[s][1][local[m]]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    outs = [np.empty(int(offsets[-1]), dtype=v.dtype) for v in parts[0][2]] if parts else []
    for s in np.unique(shard):
        m = shard == s
        src = ragged_positions(starts[m], lengths[m])
        dst = ragged_positions(offsets[:-1][m], lengths[m])
        for out, values in zip(outs, parts[s][2]):
            out[dst] = values[src]
    return offsets, outs


def _ragged_torch(offsets: torch.Tensor, values: list[torch.Tensor], idx: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Resident ragged gather: (B,) row starts of the batch and its compact values (one host sync for nnz)."""
    starts = offsets.index_select(0, idx)  # (B,)
    lengths = offsets.index_select(0, idx + 1) - starts  # (B,)
    out_off = torch.cumsum(lengths, 0) - lengths  # (B,) exclusive prefix sum
    total = int(lengths.sum())
    pos = torch.repeat_interleave(starts - out_off, lengths, output_size=total)
    pos += torch.arange(total, device=idx.device)
    return out_off, [v.index_select(0, pos) for v in values]


# ----------------------------------------------------------------------------- split storage
def _tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor copy of a (possibly read-only, memory-mapped) array on ``device``."""
    return torch.from_numpy(np.array(arr, copy=True)).to(device)


class SplitData:
    """One split ready for batching; ``rows`` selects a subset (a carved split) of the shards.

    Small columns (labels, ``w``, ids) are always contiguous on the batch device; features
    are resident (``gpu``/``cpu``) or stay as memory-mapped per-shard views (``none``).
    """

    def __init__(self, ss: ShardSet, rows: np.ndarray | None, cache: str, device: torch.device, name: str) -> None:
        self.name, self.directory, self.cache = name, ss.directory, cache
        self.device = device if cache == "gpu" else torch.device("cpu")
        sizes = [int(s["rows"]) for s in ss.shards]
        self.shard_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # (S + 1,)
        self.row_map = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.rows = int(self.shard_starts[-1]) if rows is None else len(rows)
        feat = ss.feature
        self.kind = feat.get("kind") or ("sparse" if ss.has_column("x_ids") else "dense")
        self.scale = 1.0 if feat.get("scale") is None else float(feat["scale"])
        self.offset = 0.0 if feat.get("offset") is None else float(feat["offset"])

        def small(name: str) -> np.ndarray:  # (rows,) one column, selected
            col = ss.concat(name)
            return col if self.row_map is None else col[self.row_map]

        self.sample_id = small("sample_id").astype(np.int64)  # (N,) kept on CPU for the audit
        source = small("source_id").astype(np.int64) if ss.has_column("source_id") else self.sample_id
        self.cols = {
            "sample_id": _tensor(self.sample_id, self.device),
            "source_id": _tensor(source, self.device),
            "w": _tensor(small("weight").astype(np.float32) if ss.has_column("weight")
                         else np.ones(self.rows, np.float32), self.device),
        }
        self.labels: dict[str, torch.Tensor] = {}
        for col, spec in label_specs(ss).items():
            dtype = np.float32 if spec.get("classes", ()) is None else np.int64
            self.labels[col] = _tensor(small(col).astype(dtype), self.device)
        # Every row weighs 1 and is labelled: then a batch without padding needs no
        # weighting at all (the module takes the plain mean loss, fewer ops per step).
        self.unit_weights = bool((self.cols["w"] == 1).all()) and all(
            bool((~torch.isnan(t) if t.is_floating_point() else t >= 0).all()) for t in self.labels.values())
        if self.kind == "dense":
            self._init_dense(ss)
        else:
            self._init_sparse(ss)

    def _init_dense(self, ss: ShardSet) -> None:
        """Dense ``x``: (N, F) resident in its stored dtype, or per-shard (n_s, F) views."""
        self.views = [v.reshape(v.shape[0], int(np.prod(v.shape[1:]))) for v in ss.column("x")]
        feat = ss.feature
        self.width = int(self.views[0].shape[1]) if self.views else int(np.prod(feat.get("shape") or [0]))
        self.x = None
        if self.cache == "none":
            return
        np_dtype = self.views[0].dtype if self.views else np.dtype(feat.get("dtype", "float32"))
        dtype = torch.from_numpy(np.empty(0, np_dtype)).dtype
        self.x = torch.empty((self.rows, self.width), dtype=dtype, device=self.device)  # (N, F)
        for a in range(0, self.rows, _RESIDENT_CHUNK):
            sel = self._global(np.arange(a, min(a + _RESIDENT_CHUNK, self.rows), dtype=np.int64))
            self.x[a:a + len(sel)].copy_(torch.from_numpy(take_rows(self.views, self.shard_starts, sel)))
        self.views = []  # resident now: drop the mapped views

    def _init_sparse(self, ss: ShardSet) -> None:
        """Sparse ``x_ids``/``x_weights``: compact resident (ids, weights, offsets) or per-shard parts."""
        self.parts = []
        for (off, ids), (off_w, wts) in zip(ss.sparse_column("x_ids"), ss.sparse_column("x_weights")):
            if not np.array_equal(off, off_w):
                raise ShardtrainError(f"{self.directory}: x_ids and x_weights have different row offsets")
            self.parts.append((off[:-1].astype(np.int64), np.diff(off).astype(np.int64), [ids, wts]))
        if self.cache == "none":
            return
        offsets, (ids, wts) = take_ragged(self.parts, self.shard_starts, self._global(np.arange(self.rows)))
        self.sp_offsets = torch.from_numpy(offsets).to(self.device)  # (N + 1,)
        self.sp_ids = torch.from_numpy(ids).to(self.device)  # (nnz,) stored dtype (int32)
        self.sp_weights = torch.from_numpy(wts.astype(np.float32)).to(self.device)  # (nnz,)
        self.parts = []

    def _global(self, idx: np.ndarray) -> np.ndarray:
        """Split-local row numbers to global rows of the shard set."""
        return idx if self.row_map is None else self.row_map[idx]

    def batch(self, idx: torch.Tensor, pad: torch.Tensor) -> dict[str, Any]:
        """The batch of split rows ``idx`` (B,) on ``self.device``; ``pad`` (B,) marks padding (w = 0)."""
        return self.convert(self.gather(idx, pad))

    def gather(self, idx: torch.Tensor, pad: torch.Tensor) -> dict[str, Any]:
        """Rows ``idx`` with dense ``x`` still in its stored dtype (see ``convert``)."""
        out: dict[str, Any] = {"x": self._features(idx)}
        if self.labels:
            ys = {c: t.index_select(0, idx) for c, t in self.labels.items()}
            out["y"] = ys["label"] if list(ys) == ["label"] else {c.removeprefix("label_"): t for c, t in ys.items()}
        out["w"] = self.cols["w"].index_select(0, idx).masked_fill(pad, 0.0)
        out["sample_id"] = self.cols["sample_id"].index_select(0, idx)
        out["source_id"] = self.cols["source_id"].index_select(0, idx)
        return out

    def convert(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Dense ``x`` to float32 ``x * scale + offset`` (B, F)."""
        x = batch["x"]
        if isinstance(x, SparseBatch):
            return batch
        x = x * self.scale if self.scale != 1.0 else x.float()  # uint8 * float -> float32 in one pass
        return {**batch, "x": x + self.offset if self.offset != 0.0 else x}

    def _features(self, idx: torch.Tensor) -> torch.Tensor | SparseBatch:
        """Gather the features of rows ``idx``: (B, F) stored dtype, or a ``SparseBatch``."""
        if self.kind == "dense":
            if self.x is not None:
                return self.x.index_select(0, idx)  # (B, F)
            return torch.from_numpy(take_rows(self.views, self.shard_starts, self._global(idx.numpy())))
        if self.cache != "none":
            out_off, (ids, wts) = _ragged_torch(self.sp_offsets, [self.sp_ids, self.sp_weights], idx)
            return SparseBatch(ids.long(), out_off, wts)
        offsets, (ids, wts) = take_ragged(self.parts, self.shard_starts, self._global(idx.numpy()))
        return SparseBatch(torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(offsets[:-1]),
                           torch.from_numpy(wts.astype(np.float32)))


def estimate_bytes(ss: ShardSet, rows: np.ndarray | None) -> int:
    """Bytes a split takes when resident: features in their stored dtype plus the small columns."""
    n_all = max(ss.rows, 1)
    n = ss.rows if rows is None else len(rows)
    small = n * (8 * 2 + 4 + 8 * len(label_specs(ss)))  # ids, w, labels
    if ss.has_column("x"):
        views = ss.column("x")
        per_row = int(np.prod(views[0].shape[1:])) * views[0].itemsize if views else 0
        return n * per_row + small
    nnz = sum(len(vals) for _, vals in ss.sparse_column("x_ids"))
    return int(nnz * n / n_all) * 8 + n * 8 + small


def label_specs(ss: ShardSet) -> dict[str, dict[str, Any]]:
    """Label columns (``label``, ``label_<task>``) in schema order with their index descriptions."""
    declared = ss.labels
    return {c: dict(declared.get(c, {})) for c in ss.column_names if c == "label" or c.startswith("label_")}


def check_labels(ss: ShardSet) -> None:
    """Refuse class labels outside ``[-1, n_classes)`` (one vectorised min/max per column)."""
    for col, spec in label_specs(ss).items():
        classes = spec.get("classes", ())
        if classes is None or not classes:  # regression, or no declared classes to check against
            continue
        for i, arr in enumerate(ss.column(col)):
            if len(arr) and (arr.min() < -1 or arr.max() >= len(classes)):
                row = int(np.flatnonzero((arr < -1) | (arr >= len(classes)))[0])
                raise ShardtrainError(
                    f"{ss.directory / ss.shards[i]['file']}: column {col!r} row {row} has label {int(arr[row])}, "
                    f"outside the {len(classes)} declared classes (-1 = missing)"
                )


def carve_rows(ss: ShardSet, seed: int, fraction: float) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Split a train shard set into (train rows, val rows) by a hash of (seed, source id).

    A source goes to validation iff its hash falls under ``fraction``; all its augmented
    copies leave train, and validation keeps only the originals (``aug_index == 0``).
    """
    sample = ss.concat("sample_id").astype(np.int64)
    source = ss.concat("source_id").astype(np.int64) if ss.has_column("source_id") else sample
    if ss.has_column("aug_index"):
        original = ss.concat("aug_index") == 0
    else:
        original = sample == source
    to_val = unit_hash(seed, source, salt=0x7661) < fraction  # (N,) per row, by its source
    train = np.flatnonzero(~to_val)
    val = np.flatnonzero(to_val & original)
    report = {"train_rows": int(len(train)), "val_rows": int(len(val)),
              "val_sources": int(len(np.unique(source[to_val]))), "dropped_copies": int((to_val & ~original).sum())}
    return train, val, report


# ----------------------------------------------------------------------------- iterables
def _slice_batch(batch: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    """Rows ``[a, b)`` of a dense batch dict (views, no copy)."""
    return {k: ({t: u[a:b] for t, u in v.items()} if isinstance(v, dict) else v[a:b]) for k, v in batch.items()}


class ShardBatches:
    """Batches of one split for one rank: an iterable with ``__len__`` (steps per epoch).

    Not a ``DataLoader``, so Lightning injects no ``DistributedSampler``: the rank slicing
    is ours. Without a ``driver`` the order is fixed (evaluation); a driver supplies the
    epoch plan and is told about every batch (training state and audit).
    """

    def __init__(self, split: SplitData, batch_size: int, rank: int, world: int,
                 driver: Callable[[ShardBatches], Any] | None = None, steps_per_call: int = 1) -> None:
        self.split, self.batch_size, self.rank, self.world = split, int(batch_size), rank, world
        self.driver = driver
        self.steps = math.ceil(per_rank_rows(split.rows, world) / self.batch_size)  # batches = optimizer steps
        self.steps_per_call = int(steps_per_call)  # checked by ShardDataModule
        self.augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None  # training only: fn(x, step) -> x

    def __len__(self) -> int:
        """Items per epoch: batches, or groups of ``steps_per_call`` batches (the last may be shorter)."""
        return math.ceil(self.steps / self.steps_per_call)

    def __iter__(self) -> Iterator[dict[str, Any] | list[dict[str, Any]]]:
        """A fresh pass; the plan is made lazily at the first ``next()``, when the epoch is known."""
        return self._generate()

    def _generate(self) -> Iterator[dict[str, Any] | list[dict[str, Any]]]:
        if self.driver is None:
            plan = plan_epoch(self.split.rows, self.batch_size, self.rank, self.world, 0, 0, shuffle=False)
            on_batch = None
        else:
            plan, on_batch = self.driver(self)
        device = self.split.device
        idx = plan.indices.to(device)  # (per_rank,) one copy per epoch
        pad = plan.padding.to(device)
        bs, group, end = self.batch_size, self.steps_per_call, plan.end
        # Padding is a suffix of a rank's slice: batches ending before it are all real rows.
        unpadded = len(plan.padding) - int(plan.padding.sum()) if self.split.unit_weights else 0
        # Dense rows are gathered a block of batches at a time in their stored dtype, then
        # sliced and converted per batch: the per-gather overhead (one np.take per shard, a
        # few index_selects) is paid once per block, the float conversion stays in cache.
        if self.split.kind == "dense":
            block = max(1, _BLOCK_ROWS // bs)
            block = max(block // group, 1) * group  # whole groups per gather
        else:  # a SparseBatch cannot be sliced by rows: one gather per batch
            block = 1
        items: list[dict[str, Any]] = []
        for first in range(plan.start, end, block):
            last = min(first + block, end)
            rows = slice(first * bs, last * bs)
            gathered = self.split.gather(idx[rows], pad[rows])
            for step in range(first, last):
                a = (step - first) * bs
                batch = self.split.convert(gathered if last - first == 1 else _slice_batch(gathered, a, a + bs))
                if self.augment is not None and isinstance(batch["x"], torch.Tensor):
                    # step counts batches from epoch 0: the same draws on resume, whatever the grouping
                    batch["x"] = self.augment(batch["x"], plan.epoch * plan.steps + step)
                batch["unit_weights"] = (step + 1) * bs <= unpadded  # every w == 1 and every row labelled
                items.append(batch)
                # Groups are counted from the epoch's first batch (a resumed pass starts on a
                # group boundary), so every epoch has the same number of items.
                if (step + 1) % group and step + 1 != end:
                    continue
                if on_batch is not None:
                    on_batch(step + 1)  # before handing out: a checkpoint taken after this call counts it
                yield items if group > 1 else batch
                items = []


class TrainBatches(ShardBatches):
    """Training batches; ``state_dict``/``load_state_dict`` make Lightning treat it as resumable.

    The state is the DataModule's (epoch, batches done, seed): both places restore the same
    thing, so it does not matter which of them Lightning calls.
    """

    def __init__(self, split: SplitData, batch_size: int, rank: int, world: int, owner: Any,
                 steps_per_call: int = 1, augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> None:
        super().__init__(split, batch_size, rank, world, driver=owner._begin_train_epoch, steps_per_call=steps_per_call)
        self._owner = owner
        self.augment = augment

    def state_dict(self) -> dict[str, Any]:
        """The owning DataModule's state."""
        return self._owner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the owning DataModule's state."""
        self._owner.load_state_dict(state_dict)


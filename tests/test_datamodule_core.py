"""ShardDataModule on tiny seeded shards: exactness under simulated DDP, permutations,
validation carving, sparse batches, label checks, cache modes and mid-epoch resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from shardtrain.models.inputs import SparseBatch
from shardtrain.data.batching import plan_epoch
from shardtrain.config import DataConfig
from shardtrain.data.datamodule import ShardDataModule, merge_audit
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import shard_name, write_index, write_shard
from shardtrain.shards.format import AUG_ID_STRIDE


def make_shards(directory: Path, sizes: list[int], *, width: int = 6, n_classes: int = 3, copies: int = 0,
                sparse: bool = False, tasks: tuple[str, ...] = (), seed: int = 0, bad_label: bool = False,
                scale: float = 1 / 255, weights: bool = False) -> Path:
    """Write a split of ``sum(sizes)`` rows (times ``1 + copies`` augmented rows) as shards plus index.

    Row ``i`` of the originals has ``sample_id = 1000 + i``; copy ``c`` of it gets
    ``sample_id + c * AUG_ID_STRIDE`` and ``source_id = sample_id``. Dense ``x`` is uint8
    ``(width,)`` with ``x[0] = i % 256`` so a batch can be checked against its ids.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    entries, first = [], 0
    label_cols = [f"label_{t}" for t in tasks] or ["label"]
    for s, n in enumerate(sizes):
        src = 1000 + np.arange(first, first + n, dtype=np.int64)
        first += n
        aug = np.repeat(np.arange(copies + 1, dtype=np.int32), n)  # originals first, then copies
        source = np.tile(src, copies + 1)
        cols: dict = {"sample_id": source + aug.astype(np.int64) * AUG_ID_STRIDE}
        if sparse:
            lengths = rng.integers(0, 5, size=len(source))
            ids = rng.integers(0, 64, size=int(lengths.sum())).astype(np.int32)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            cols["x_ids"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))
            cols["x_weights"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids.astype(np.float32) / 10))
        else:
            x = rng.integers(0, 256, size=(len(source), width), dtype=np.uint8)
            x[:, 0] = (source % 256).astype(np.uint8)
            cols["x"] = x
        for k, col in enumerate(label_cols):
            cols[col] = ((source + k) % n_classes).astype(np.int64)
        if bad_label and s == len(sizes) - 1 and n:
            cols[label_cols[0]][-1] = n_classes
        if copies:
            cols["source_id"], cols["aug_index"] = source, aug
        if weights:
            cols["weight"] = (1 + (source % 3)).astype(np.float32)
        entries.append(write_shard(directory / shard_name(s, len(sizes)), cols))
    feature = ({"kind": "sparse", "dim": 64, "dtype": "float32"} if sparse else
               {"kind": "dense", "dtype": "uint8", "shape": [width], "scale": scale, "offset": 0.0})
    schema = [{"name": c, "type": "?"} for c in cols]
    index = {"format": "shardtrain-shards", "version": 2 if sparse else 1, "split": "train",
             "rows": sum(e["rows"] for e in entries), "schema": schema, "features": {"x": feature},
             "labels": {c: {"classes": [str(i) for i in range(n_classes)], "counts": {}} for c in label_cols},
             "shards": entries}
    write_index(directory, index)
    return directory


def dm_kwargs(**kw) -> dict:
    """ShardDataModule keywords: small batches, no carving and the CPU cache unless overridden."""
    return {"batch_size": 8, "eval_batch_size": 16, "device_cache": "cpu", "val_fraction": 0.0, **kw}


def data_cfg(**kw) -> DataConfig:
    """The same as a DataConfig (for ``ShardDataModule.from_config``)."""
    return DataConfig(**dm_kwargs(**kw))


def epoch_batches(dm: ShardDataModule, epoch: int) -> list[dict]:
    """All training batches of one epoch."""
    dm.set_epoch(epoch)
    return list(dm.train_dataloader())


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("sizes", [[100, 100, 1], [7, 0, 13], [5]])
def test_ranks_partition_every_epoch(tmp_path: Path, world: int, sizes: list[int]) -> None:
    """Simulated ranks: disjoint, equal steps, every id exactly once, padding = per_rank * world - N."""
    d = make_shards(tmp_path / "train", sizes)
    n = sum(sizes)
    per_rank = -(-n // world)
    for epoch in (0, 1):
        seen, steps, pads = [], set(), 0
        for rank in range(world):
            dm = ShardDataModule(d, **dm_kwargs(), seed=3, rank=rank, world_size=world)
            dm.setup("fit")
            assert dm.padding_per_epoch == per_rank * world - n
            batches = epoch_batches(dm, epoch)
            steps.add(len(batches))
            assert len(batches) == len(dm.train_dataloader()) == -(-per_rank // 8)
            ids = torch.cat([b["sample_id"] for b in batches])
            w = torch.cat([b["w"] for b in batches])
            assert len(ids) == per_rank
            seen.append(ids[w > 0])
            pads += int((w == 0).sum())
        assert len(steps) == 1
        allseen = torch.cat(seen).sort().values
        assert torch.equal(allseen, 1000 + torch.arange(n))
        assert pads == per_rank * world - n


def test_permutation_depends_on_seed_and_epoch_only() -> None:
    """Equal (seed, epoch) -> equal order; other epoch or seed -> a different order."""
    a = plan_epoch(500, 8, 0, 1, seed=1, epoch=2, shuffle=True).indices
    assert torch.equal(a, plan_epoch(500, 8, 0, 1, seed=1, epoch=2, shuffle=True).indices)
    assert not torch.equal(a, plan_epoch(500, 8, 0, 1, seed=1, epoch=3, shuffle=True).indices)
    assert not torch.equal(a, plan_epoch(500, 8, 0, 1, seed=2, epoch=2, shuffle=True).indices)
    assert torch.equal(a.sort().values, torch.arange(500))


def test_batches_match_the_shards(tmp_path: Path) -> None:
    """x is scaled float32 (B, F) of the right rows; y int64; w from the weight column."""
    d = make_shards(tmp_path / "train", [30, 20], weights=True)
    dm = ShardDataModule(d, **dm_kwargs(), seed=0)
    dm.setup("fit")
    assert dm.feature_dim == 6 and list(dm.labels) == ["label"]
    b = next(iter(dm.train_dataloader()))
    assert b["x"].dtype == torch.float32 and b["x"].shape == (8, 6)
    torch.testing.assert_close(b["x"][:, 0], ((b["sample_id"] % 256).float() / 255))
    assert b["y"].dtype == torch.int64 and torch.equal(b["y"], b["sample_id"] % 3)
    torch.testing.assert_close(b["w"], (1 + b["sample_id"] % 3).float())
    assert torch.equal(b["source_id"], b["sample_id"])


def test_multitask_labels_become_a_dict(tmp_path: Path) -> None:
    """``label_<task>`` columns are yielded as ``{task: (B,) int64}``."""
    d = make_shards(tmp_path / "train", [20], tasks=("kind", "size"))
    dm = ShardDataModule(d, **dm_kwargs(), seed=0)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert set(b["y"]) == {"kind", "size"}
    assert torch.equal(b["y"]["size"], (b["sample_id"] + 1) % 3)


def test_cpu_and_none_caches_give_identical_batches(tmp_path: Path) -> None:
    """The mmap-per-shard gather (none) equals the resident one (cpu), dense and sparse."""
    for sparse in (False, True):
        d = make_shards(tmp_path / f"train{sparse}", [13, 0, 29, 4], sparse=sparse)
        got = []
        for cache in ("cpu", "none"):
            dm = ShardDataModule(d, **dm_kwargs(device_cache=cache, val_fraction=0.2), seed=5,
                                 rank=1, world_size=2)
            dm.setup("fit")
            assert dm.cache_modes["train"] == cache
            got.append(epoch_batches(dm, 1) + list(dm.val_dataloader()))
        for a, b in zip(*got):
            for key in a:
                if key == "x" and sparse:
                    for ta, tb in zip(a[key], b[key]):
                        assert torch.equal(ta, tb)
                elif key == "unit_weights":
                    assert a[key] is b[key]
                else:
                    assert torch.equal(a[key], b[key]), key


def test_sparse_batches_follow_embeddingbag_convention(tmp_path: Path) -> None:
    """Rows of a SparseBatch equal the shard's lists of those sample ids."""
    d = make_shards(tmp_path / "train", [11, 9], sparse=True)
    table = {}
    from shardtrain.shards import ShardSet

    ss = ShardSet(d)
    for (off, ids), (_, wts), sid in zip(ss.sparse_column("x_ids"), ss.sparse_column("x_weights"), ss.column("sample_id")):
        for r, s in enumerate(sid):
            table[int(s)] = (ids[off[r]:off[r + 1]].tolist(), wts[off[r]:off[r + 1]].tolist())
    dm = ShardDataModule(d, **dm_kwargs(batch_size=7), seed=0)
    assert dm.feature_dim == 64
    dm.setup("fit")
    for b in dm.train_dataloader():
        x = b["x"]
        assert isinstance(x, SparseBatch) and x.ids.dtype == torch.int64 and x.offsets.dtype == torch.int64
        ends = torch.cat([x.offsets[1:], torch.tensor([len(x.ids)])])
        for r, s in enumerate(b["sample_id"].tolist()):
            assert x.ids[x.offsets[r]:ends[r]].tolist() == table[s][0]
            assert x.weights[x.offsets[r]:ends[r]].tolist() == pytest.approx(table[s][1])


def test_validation_carved_by_source_never_leaks(tmp_path: Path) -> None:
    """All copies of a val source leave train; val holds only originals; deterministic by seed."""
    d = make_shards(tmp_path / "train", [60, 40], copies=2)
    dm = ShardDataModule(d, **dm_kwargs(val_fraction=0.25), seed=7)
    dm.setup("fit")
    train_src = set(dm.split("train").cols["source_id"].tolist())
    val = dm.split("val")
    val_src = val.cols["source_id"].tolist()
    assert val_src and not train_src & set(val_src)
    assert val.cols["sample_id"].tolist() == val_src  # originals only
    assert len(train_src) + len(val_src) == 100
    rep = dm.carve_report
    assert rep["val_rows"] == len(val_src) and rep["dropped_copies"] == 2 * len(val_src)
    assert rep["train_rows"] == 3 * len(train_src)
    again = ShardDataModule(d, **dm_kwargs(val_fraction=0.25), seed=7)
    again.setup("fit")
    assert again.split("val").cols["sample_id"].tolist() == val.cols["sample_id"].tolist()
    other = ShardDataModule(d, **dm_kwargs(val_fraction=0.25), seed=8)
    other.setup("fit")
    assert other.split("val").cols["sample_id"].tolist() != val.cols["sample_id"].tolist()


def test_label_outside_declared_classes_is_refused(tmp_path: Path) -> None:
    """A label >= n_classes fails at setup naming the shard file and the column."""
    d = make_shards(tmp_path / "train", [5, 6], bad_label=True)
    dm = ShardDataModule(d, **dm_kwargs(), seed=0)
    with pytest.raises(ShardtrainError, match=r"part-00001-of-00002\.arrow.*'label'"):
        dm.setup("fit")


def test_missing_directory_and_version_propagate(tmp_path: Path) -> None:
    """ShardSet's refusals (no index, unknown version) come through unchanged."""
    with pytest.raises(ShardtrainError, match="no such shard directory"):
        ShardDataModule(tmp_path / "nope", **dm_kwargs()).setup("fit")
    d = make_shards(tmp_path / "train", [3])
    text = (d / "_index.json").read_text().replace('"version": 1', '"version": 99')
    (d / "_index.json").write_text(text)
    with pytest.raises(ShardtrainError, match="unknown shard format version"):
        ShardDataModule(d, **dm_kwargs()).setup("fit")


def test_state_dict_resume_skips_done_batches(tmp_path: Path) -> None:
    """Stop after k batches of epoch 1, restore into a fresh module: the rest follows exactly."""
    d = make_shards(tmp_path / "train", [40, 23])
    full = ShardDataModule(d, **dm_kwargs(), seed=4)
    full.setup("fit")
    ref = [b["sample_id"] for b in epoch_batches(full, 0)] + [b["sample_id"] for b in epoch_batches(full, 1)]
    first = ShardDataModule(d, **dm_kwargs(), seed=4)
    first.setup("fit")
    got = [b["sample_id"] for b in epoch_batches(first, 0)]
    it = iter(first.train_dataloader())
    got += [next(it)["sample_id"] for _ in range(3)]  # epoch 1, 3 batches
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == 3 and state["seed"] == 4
    resumed = ShardDataModule(d, **dm_kwargs(), seed=999)
    resumed.setup("fit")
    resumed.load_state_dict(state)
    got += [b["sample_id"] for b in resumed.train_dataloader()]
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))
    assert resumed.state_dict()["batches_done"] == len(resumed.train_dataloader())
    nxt = [b["sample_id"] for b in resumed.train_dataloader()]  # then epoch 2 from its start
    assert resumed.state_dict()["epoch"] == 2 and len(nxt) == len(resumed.train_dataloader())


def test_audit_of_simulated_ranks_merges(tmp_path: Path) -> None:
    """Per-rank audit files merge into equal steps, every sample once, padding counted."""
    d = make_shards(tmp_path / "train", [10, 10, 1])
    audit = tmp_path / "audit"
    for rank in range(2):
        dm = ShardDataModule(d, **dm_kwargs(audit=True), seed=1, audit_dir=audit, rank=rank, world_size=2)
        dm.setup("fit")
        for epoch in range(2):
            epoch_batches(dm, epoch)
        dm.write_audit()
    report = merge_audit(audit)
    assert report["ok"] and report["world_size"] == 2
    assert [e["steps_per_rank"] for e in report["epochs"]] == [[2, 2], [2, 2]]
    assert all(e["seen_once"] == 21 and e["padding"] == 1 for e in report["epochs"])


def test_audit_flags_overlapping_ranks(tmp_path: Path) -> None:
    """Ranks that disagree on the permutation (different seeds) make the merged audit not ok."""
    d = make_shards(tmp_path / "train", [10, 10, 1])
    audit = tmp_path / "audit"
    for rank in range(2):
        dm = ShardDataModule(d, **dm_kwargs(audit=True), seed=rank, audit_dir=audit, rank=rank, world_size=2)
        dm.setup("fit")
        epoch_batches(dm, 0)
        dm.write_audit()
    report = merge_audit(audit)
    assert not report["ok"]
    assert report["epochs"][0]["duplicated"] > 0 and report["epochs"][0]["missing"] > 0

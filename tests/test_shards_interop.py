"""Other tools read a split directory as it stands: pyarrow.dataset, pandas, polars, HF datasets, Ray Data.

The split is written by the stage runner (so it holds ``_index.json`` and ``_rejects.jsonl``
beside the shards); each reader must see exactly the kept rows, the class names and the
(4, 3) feature shape.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from shardtrain.shards import ShardSet
from shardtrain.shards import format as fmt
from shardtrain.stages.runner import SplitJob, run_stage

N, SHAPE, CLASSES = 95, (4, 3), ["cat", "dog", "eel"]


def _keep_and_reject_fives(batch, ctx):
    """A stage function that rejects sample 5, so a rejects file is written too."""
    return {**batch, "reject_reason": np.where(batch["sample_id"] == 5, "bad record", "")}


def _source():
    rng = np.random.default_rng(7)
    return {"sample_id": np.arange(N, dtype=np.int64), "x": rng.integers(0, 256, (N, *SHAPE), dtype=np.uint8),
            "label": (np.arange(N) % 3).astype(np.int64),
            "text": np.array([f"row {i}" for i in range(N)], dtype=object)}


def _write_split(stage_dir, executor="local"):
    job = SplitJob("train", _source(), _keep_and_reject_fives, None,
                   describe={"labels": {"label": {"classes": CLASSES}},
                             "features": {"x": {"kind": "dense", "dtype": "uint8", "shape": list(SHAPE)}}})
    run_stage("prepare", [job], stage_dir, rows_per_shard=40, batch_rows=16, max_reject_fraction=0.1,
              executor=executor, fp="fp", config={}, dataset="toy")
    return stage_dir / "train"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return _write_split(tmp_path_factory.mktemp("interop"))


def _expected():
    src = _source()
    keep = src["sample_id"] != 5
    return {k: v[keep] for k, v in src.items()}


def test_split_holds_only_shards_and_underscore_files(split):
    names = sorted(p.name for p in split.iterdir())
    assert [n for n in names if not n.endswith(".arrow")] == [fmt.INDEX_NAME, fmt.REJECTS_NAME]
    assert all(n.startswith("_") for n in names if not n.endswith(".arrow"))
    assert ShardSet(split, verify=True).rows == N - 1


def test_rerunning_a_stage_over_a_version_2_directory_removes_the_old_names(tmp_path):
    old = tmp_path / "train"
    old.mkdir()
    for name in (fmt.LEGACY_INDEX_NAME, fmt.LEGACY_REJECTS_NAME, fmt.LEGACY_PREVIEW_NAME):
        (old / name).write_text("from version 2")
    split = _write_split(tmp_path)
    assert not any((split / n).exists() for n in (fmt.LEGACY_INDEX_NAME, fmt.LEGACY_REJECTS_NAME, fmt.LEGACY_PREVIEW_NAME))
    assert pads.dataset(split, format="ipc").count_rows() == N - 1


def test_pyarrow_dataset_reads_the_directory(split):
    table = pads.dataset(split, format="ipc").to_table()  # default ignore_prefixes skip "_" files
    exp = _expected()
    assert sorted(table.column("sample_id").to_pylist()) == exp["sample_id"].tolist()
    assert table.schema.field("x").type == pa.list_(pa.list_(pa.uint8(), 3), 4)
    table = table.sort_by("sample_id")
    x = table.column("x").combine_chunks().flatten().flatten().to_numpy().reshape(-1, *SHAPE)
    np.testing.assert_array_equal(x, exp["x"])


def test_pandas_reads_the_directory(split):
    df = pads.dataset(split, format="ipc").to_table().to_pandas().sort_values("sample_id")
    exp = _expected()
    assert df["label"].tolist() == exp["label"].tolist() and df["text"].tolist() == exp["text"].tolist()
    np.testing.assert_array_equal(np.stack([np.stack(r) for r in df["x"]]), exp["x"])


def test_pandas_reads_one_shard_with_read_feather(split):
    import pandas as pd

    df = pd.read_feather(split / fmt.shard_name(0, 3))
    assert len(df) == 39 and 5 not in df["sample_id"].tolist()


def test_polars_reads_the_shards(split):
    pl = pytest.importorskip("polars")
    df = pl.read_ipc(f"{split}/*.arrow").sort("sample_id")
    exp = _expected()
    assert df.schema["x"] == pl.Array(pl.UInt8, SHAPE)
    np.testing.assert_array_equal(df["x"].to_numpy(), exp["x"])
    assert df["label"].to_list() == exp["label"].tolist()


@pytest.mark.parametrize("how", ["data_files", "directory"])
def test_hf_datasets_keeps_class_names_and_shapes(split, tmp_path, monkeypatch, how):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    if how == "data_files":
        ds = datasets.load_dataset("arrow", data_files=f"{split}/*.arrow", split="train", cache_dir=str(tmp_path))
    else:
        ds = datasets.load_dataset(str(split), split="train", cache_dir=str(tmp_path))
    assert ds.features["label"] == datasets.ClassLabel(names=CLASSES)
    assert ds.features["label"].int2str(2) == "eel"
    assert len(ds) == N - 1
    batch = ds.with_format("numpy").sort("sample_id")[:]
    exp = _expected()
    x = ds.features["x"]  # List(List(Value("uint8"), length=3), length=4): the shape is in the type
    assert (x.length, x.feature.length, x.feature.feature.dtype) == (4, 3, "uint8")
    assert batch["x"].shape == (N - 1, *SHAPE)  # (numpy formatting widens ints to int64)
    np.testing.assert_array_equal(batch["x"], exp["x"])


@pytest.mark.ray
def test_ray_data_reads_the_index_shards(tmp_path, ray_local):
    from shardtrain.stages.ray_data import read_shards

    split = _write_split(tmp_path / "local")
    remote = _write_split(tmp_path / "ray", executor="ray")
    # Both executors still write byte-identical v3 shards (class names and all).
    assert [p.read_bytes() for p in sorted(split.glob("*.arrow"))] == [p.read_bytes() for p in sorted(remote.glob("*.arrow"))]
    (split / "stray.arrow").write_bytes(b"not a shard the index names")
    ds = read_shards(split, verify=True)
    table = pa.concat_tables(ray_local.get(ds.to_arrow_refs())).sort_by("sample_id")
    exp = _expected()
    assert table.column("sample_id").to_pylist() == exp["sample_id"].tolist()
    x = table.column("x").combine_chunks().flatten().flatten().to_numpy().reshape(-1, *SHAPE)
    np.testing.assert_array_equal(x, exp["x"])
    assert read_shards(split, columns=["label"]).columns() == ["label"]

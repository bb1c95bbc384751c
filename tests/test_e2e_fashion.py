"""End to end on the real Fashion-MNIST files: prepare, inspect/verify, augment on Ray vs in process."""

from __future__ import annotations

import json
import shutil

import pytest

from shardtrain.shards import ShardSet
from tests.conftest import run_cli

pytestmark = pytest.mark.dataset("fashion-mnist")  # every test here reads the real files


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir):
    """Fashion-MNIST prepared once for this module (local executor, ~5 s)."""
    out = tmp_path_factory.mktemp("fmnist")
    res = run_cli("run", "fashion-mnist", "--stage", "prepare", "--executor", "local",
                  "--data-dir", str(data_dir), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def test_prepare_gives_the_official_counts(prepared):
    for split, rows, per_class in (("train", 60000, 6000), ("test", 10000, 1000)):
        res = run_cli("inspect", str(prepared / "shards" / "prepare" / split), "--json")
        report = json.loads(res.stdout)
        assert report["rows"] == rows
        assert list(report["labels"]["label"]["counts"].values()) == [per_class] * 10
        assert report["labels"]["label"]["classes"][0] == "T-shirt/top"
    index = json.loads((prepared / "shards" / "prepare" / "train" / "_index.json").read_text())
    assert index["config"]["dataset"]["name"] == "fashion-mnist"
    assert [s["rows"] for s in index["shards"]] == [10000] * 6


def test_verify_passes_then_fails_on_one_flipped_byte(prepared, tmp_path):
    copy = tmp_path / "train"
    shutil.copytree(prepared / "shards" / "prepare" / "train", copy)
    assert run_cli("inspect", str(copy), "--verify").returncode == 0
    shard = sorted(copy.glob("part-*.arrow"))[3]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    res = run_cli("inspect", str(copy), "--verify")
    assert res.returncode == 1
    assert "sha256 mismatch" in res.stdout and shard.name in res.stdout


def test_rerun_is_skipped_when_up_to_date(prepared, data_dir):
    res = run_cli("run", "fashion-mnist", "--stage", "prepare", "--executor", "local",
                  "--data-dir", str(data_dir), "--out", str(prepared))
    assert res.returncode == 0
    assert "up to date" in res.stderr


@pytest.mark.ray
def test_augment_on_ray_matches_local_byte_for_byte(prepared, data_dir, tmp_path):
    ray_out = tmp_path / "ray"
    shutil.copytree(prepared / "shards" / "prepare", ray_out / "shards" / "prepare")
    args = ["run", "fashion-mnist", "--stage", "augment", "--data-dir", str(data_dir), "--set", "augment.copies=1"]
    local = run_cli(*args, "--executor", "local", "--out", str(prepared))
    assert local.returncode == 0, local.stderr
    remote = run_cli(*args, "--executor", "ray", "--out", str(ray_out))
    assert remote.returncode == 0, remote.stderr
    a = json.loads((prepared / "shards" / "augment" / "train" / "_index.json").read_text())
    b = json.loads((ray_out / "shards" / "augment" / "train" / "_index.json").read_text())
    assert a["rows"] == b["rows"] == 120000
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert (prepared / "shards" / "augment" / "train" / "_preview.png").stat().st_size > 1000
    ss = ShardSet(prepared / "shards" / "augment" / "train")
    aug = ss.concat("aug_index")
    assert (aug == 0).sum() == (aug == 1).sum() == 60000

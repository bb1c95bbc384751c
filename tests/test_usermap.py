"""prepare.map / augment.map: a user's batch function after the kind's transform, in every shard task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import shardtrain
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import ShardSet
from shardtrain.stages import usermap
from shardtrain.stages.dense import passthrough
from shardtrain.stages.runner import SplitJob, plan_tasks, run_shard_task

FEATS = '''
import numpy as np

def add_ink(batch, ctx):
    """Adds a column and replaces x by the flat pixels plus the ink share."""
    flat = batch["x"].reshape(len(batch["x"]), -1).astype(np.float32) / 255.0
    out = dict(batch)
    out["ink"] = flat.mean(axis=1).astype(np.float32)
    out["x"] = np.concatenate([flat, out["ink"][:, None] * ctx.options["w"]], axis=1)
    out["where"] = np.array([f"{ctx.stage}/{ctx.split}/{ctx.shard}/{ctx.rows[0]}"] * len(flat), dtype=object)
    return out

def reject_odd(batch, ctx):
    """Rejects rows with an odd sample_id, keeps x."""
    odd = batch["sample_id"] % 2 == 1
    return dict(batch, reject_reason=np.where(odd, "odd_id", ""), reject_detail=np.where(odd, "id is odd", ""))

def boom(batch, ctx):
    if ctx.shard == "part-00001-of-00003" and ctx.rows[0] >= 750:
        raise ValueError("no ratio\\nfor you")
    return batch

def drop_rows(batch, ctx):
    return {k: v[1:] for k, v in batch.items()}

def shuffle_ids(batch, ctx):
    return dict(batch, sample_id=batch["sample_id"][::-1].copy())

def in_place(batch, ctx):
    batch["x"] *= 2
    return batch

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def feats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user module ``st_feats`` on sys.path (fresh name per test session)."""
    src = tmp_path / "mods"
    src.mkdir()
    (src / "st_feats.py").write_text(textwrap.dedent(FEATS))
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.delitem(sys.modules, "st_feats", raising=False)
    usermap._RESOLVED.clear()
    return src / "st_feats.py"


def _digits(prepare: dict) -> dict:
    return {"dataset": {"name": "digits"}, "prepare": {"rows_per_shard": 500, "batch_rows": 250, **prepare}}


def test_map_adds_a_column_replaces_x_and_rewrites_features_x(feats: Path, tmp_path: Path) -> None:
    cfg = _digits({"map": "st_feats:add_ink", "map_options": {"w": 2.0}})
    index = shardtrain.run(cfg, stage="prepare", out=tmp_path / "o", executor="local")["prepare"]["train"]
    feature = index["features"]["x"]
    assert feature["shape"] == [65] and feature["dtype"] == "float32" and feature["kind"] == "dense"
    assert feature["extractor"] == "user:st_feats:add_ink"
    assert feature["base"]["shape"] == [8, 8] and feature["base"]["dtype"] == "uint8"
    assert feature["scale"] == 1.0
    shards = ShardSet(tmp_path / "o" / "shards" / "prepare" / "train")
    x, ink = shards.concat("x"), shards.concat("ink")
    assert x.shape == (index["rows"], 65)
    assert np.allclose(x[:, -1], 2.0 * ink)
    assert np.allclose(x[:, :64].mean(axis=1), ink, atol=1e-6)
    where = list(shards.concat("where"))
    assert where[0] == "prepare/train/part-00000-of-00003/0"
    assert where[-1].startswith("prepare/train/part-00002-of-00003/")
    assert "prepare/train/part-00001-of-00003/750" in where


def test_map_rejects_rows_with_reason_and_keeps_the_rest(feats: Path, tmp_path: Path) -> None:
    cfg = _digits({"map": "st_feats:reject_odd", "max_reject_fraction": 0.6})
    indexes = shardtrain.run(cfg, stage="prepare", out=tmp_path / "o", executor="local")["prepare"]
    train = indexes["train"]
    ids = ShardSet(tmp_path / "o" / "shards" / "prepare" / "train").concat("sample_id")
    assert len(ids) > 0 and np.all(ids % 2 == 0)
    assert train["rejects"]["reasons"] == {"odd_id": train["rejects"]["count"]}
    assert train["features"]["x"]["extractor"] == "pixels"  # x untouched: the kind's description stays
    rejects = (tmp_path / "o" / "shards" / "prepare" / "train" / "_rejects.jsonl").read_text().splitlines()
    assert json.loads(rejects[0])["detail"] == "id is odd"


def test_an_exception_names_function_stage_shard_and_rows(feats: Path, tmp_path: Path) -> None:
    with pytest.raises(ShardtrainError) as info:
        shardtrain.run(_digits({"map": "st_feats:boom"}), stage="prepare", out=tmp_path / "o", executor="local")
    msg = str(info.value)
    assert msg == ("prepare.map st_feats:boom failed on prepare/train shard part-00001-of-00003 rows 750-999: "
                   "ValueError: no ratio for you")
    assert not (tmp_path / "o" / "shards" / "prepare" / "train" / "_index.json").exists()


@pytest.mark.parametrize("fn, words", [("drop_rows", "has 249 rows for 250"), ("shuffle_ids", "changed sample_id")])
def test_a_map_must_keep_rows_and_sample_ids(feats: Path, tmp_path: Path, fn: str, words: str) -> None:
    with pytest.raises(ShardtrainError, match=words):
        shardtrain.run(_digits({"map": f"st_feats:{fn}"}), stage="prepare", out=tmp_path / "o", executor="local")


@pytest.mark.parametrize("spec, words", [
    ("st_feats.add_ink", "must be 'package.module:function'"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("st_feats:missing", "has no attribute 'missing'"),
    ("st_feats:NOT_A_FUNCTION", "not a function"),
])
def test_a_bad_spec_fails_before_any_output(feats: Path, tmp_path: Path, spec: str, words: str) -> None:
    out = tmp_path / "o"
    with pytest.raises(ShardtrainError, match=words) as info:
        shardtrain.run(_digits({"map": spec}), stage="prepare", out=out, executor="local")
    assert "config key 'prepare.map'" in str(info.value)
    assert not out.exists()
    with pytest.raises(ShardtrainError, match="config key 'augment.map'"):
        shardtrain.run({"dataset": {"name": "digits"}, "augment": {"map": spec}}, out=out, executor="local")
    assert not out.exists()


def test_spec_options_and_module_source_are_in_the_fingerprint(feats: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"

    def prepare(**kw):
        cfg = _digits({"map": "st_feats:add_ink", "map_options": {"w": 2.0}, **kw})
        return shardtrain.run(cfg, stage="prepare", out=out, executor="local")["prepare"]

    first = prepare()
    assert prepare() is None  # up to date
    assert prepare(map_options={"w": 3.0}) is not None
    assert prepare(map_options={"w": 3.0}) is None
    # Editing the function's module re-runs the stage, with the edited function.
    feats.write_text(feats.read_text().replace("* ctx.options[\"w\"]", "* ctx.options[\"w\"] * 10"))
    again = prepare(map_options={"w": 3.0})
    assert again is not None and again["train"]["fingerprint"] != first["train"]["fingerprint"]
    x, ink = (ShardSet(out / "shards" / "prepare" / "train").concat(c) for c in ("x", "ink"))
    assert np.allclose(x[:, -1], 30.0 * ink)
    plain = shardtrain.run(_digits({}), stage="prepare", out=out, executor="local")["prepare"]
    assert plain["train"]["features"]["x"]["extractor"] == "pixels"


def test_the_ray_task_path_applies_the_map_as_run_shard_task(feats: Path, tmp_path: Path) -> None:
    """What a Ray task runs: run_shard_task with the pickled job function (resolved by import there)."""
    import pickle

    n = 30
    source = {"sample_id": np.arange(n, dtype=np.int64),
              "x": np.arange(n * 64, dtype=np.uint8).reshape(n, 8, 8), "label": np.arange(n) % 3}

    job = SplitJob("train", source, passthrough, None,
                   describe={"features": {"x": {"kind": "dense", "shape": [8, 8], "dtype": "uint8"}}})
    job = usermap.wrap_job(job, "st_feats:add_ink", {"w": 1.0}, "prepare", seed=0)
    fn = pickle.loads(pickle.dumps(job.fn))  # as Ray ships it
    usermap._RESOLVED.clear()  # a fresh worker: resolved again by import
    tasks = plan_tasks(job, tmp_path, rows_per_shard=20, batch_rows=8)
    (tmp_path / "train").mkdir()
    results = [run_shard_task(t, source, fn, job.ctx) for t in tasks]
    assert [r["entry"]["rows"] for r in results] == [20, 10]
    assert all(r["x_replaced"] and r["x_info"] == {"shape": [65], "dtype": "float32"} for r in results)
    where = sum((pa.ipc.open_file(p).read_all().column("where").to_pylist()
                 for p in sorted((tmp_path / "train").glob("part-*.arrow"))), [])
    assert where[0] == "prepare/train/part-00000-of-00002/0" and where[-1] == "prepare/train/part-00001-of-00002/28"


def test_wrap_job_for_predict_and_kind_rejects_never_reach_the_map(feats: Path) -> None:
    """A predict job wrapped the same way; rows the kind rejected keep their reason and skip the map."""
    def kind(batch, ctx):
        bad = batch["sample_id"] == 3
        return dict(batch, reject_reason=np.where(bad, "non_numeric", ""))

    n = 6
    job = SplitJob("predict", {"sample_id": np.arange(n), "x": np.full((n, 2, 2), 255, np.uint8)}, kind, None)
    wrapped = usermap.wrap_job(job, "st_feats:add_ink", {"w": 1.0}, "prepare", seed=0)
    out = wrapped.fn(job.source, None)
    assert list(out["reject_reason"]) == ["", "", "", "non_numeric", "", ""]
    assert out["x"].shape == (n, 5) and np.allclose(out["x"][[0, 1, 2, 4, 5], -1], 1.0)
    assert usermap.wrap_job(job, None, None, "prepare", 0) is job
    # The batch's arrays are views of the source: read-only, so an in-place edit is a clear error.
    edits = usermap.wrap_job(job, "st_feats:in_place", {}, "prepare", seed=0)
    with pytest.raises(ShardtrainError, match=r"st_feats:in_place failed on prepare/predict shard batch rows 0-5: "
                                              r"ValueError: .*read-only"):
        edits.fn(job.source, None)
    assert np.all(job.source["x"] == 255)


def test_submit_ships_a_map_module_outside_site_packages(feats: Path, tmp_path: Path) -> None:
    from shardtrain.cluster.jobs import map_py_modules
    from shardtrain.config import from_dict

    pkg = tmp_path / "mods" / "st_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "f.py").write_text("def g(batch, ctx):\n    return batch\n")
    cfg = from_dict({"dataset": {"name": "digits"}, "prepare": {"map": "st_feats:add_ink"},
                     "augment": {"map": "st_pkg.f:g"}})
    assert map_py_modules(cfg, None) == [str(feats.resolve()), str(pkg.resolve())]
    # At the root of the shipped working dir it is importable there already.
    assert map_py_modules(cfg, tmp_path / "mods") == []
    installed = from_dict({"dataset": {"name": "digits"}, "prepare": {"map": "numpy.linalg:norm"}})
    assert map_py_modules(installed, None) == []
    missing = from_dict({"dataset": {"name": "digits"}, "prepare": {"map": "st_nowhere:f"}})
    with pytest.raises(ShardtrainError, match="config key 'prepare.map': cannot find module 'st_nowhere'"):
        map_py_modules(missing, None)


def test_cli_finds_the_module_through_pythonpath(feats: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(feats.parent), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "shardtrain.cli", "run", "demo", "--stage", "prepare", "--executor", "local",
           "--out", str(tmp_path / "o"), "--set", "dataset.name=digits", "--set", "prepare.map=st_feats:reject_odd",
           "--set", "prepare.max_reject_fraction=0.6"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    index = json.loads((tmp_path / "o" / "shards" / "prepare" / "train" / "_index.json").read_text())
    assert set(index["rejects"]["reasons"]) == {"odd_id"}
    bad = subprocess.run(cmd[:-4] + ["--set", "prepare.map=st_feats:missing"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "config key 'prepare.map'" in bad.stderr


def test_submit_puts_the_map_module_in_the_jobs_py_modules(feats: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cmd_submit end to end with a fake job client: the user's module travels after shardtrain's package."""
    from shardtrain.cli import build_parser
    from shardtrain.cluster import jobs

    class Client:
        def submit_job(self, **kwargs):
            self.sent = kwargs
            return kwargs["submission_id"]

    client = Client()
    monkeypatch.setattr(jobs, "connect", lambda address: (client, "http://fake:8265"))
    monkeypatch.setattr(jobs, "stage_package", lambda dest: Path(dest) / "shardtrain")
    args = build_parser().parse_args(["submit", "demo", "--out", "/shared/o", "--no-wait",
                                      "--set", "prepare.map=st_feats:add_ink"])
    assert jobs.cmd_submit(args) == 0
    modules = client.sent["runtime_env"]["py_modules"]
    assert modules[-1] == str(feats.resolve())
    assert "--set prepare.map=st_feats:add_ink" in client.sent["entrypoint"]
    with pytest.raises(ShardtrainError, match="cannot find module 'st_gone'"):
        jobs.cmd_submit(build_parser().parse_args(["submit", "demo", "--no-wait", "--set", "prepare.map=st_gone:f"]))

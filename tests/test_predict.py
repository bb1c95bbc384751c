"""``shardtrain predict``: a finished run's predictions over shards or new data, as Parquet.

Real runs, kept small: the offline digits demo (no augment copies, two epochs) trained as
an MLP and as a 3-member bagging ensemble on the same prepared shards, and a multitask
run on the same digits with a second, regression label (the digit's value / 9) written
beside the class. Predicting a run's own test shards must reproduce its ``metrics.json``
test metrics exactly. New raw data goes through the kind's ``predict_job``: the digits
kind has none, so one is patched in (the test split's rows, some rejected); a small
``table`` run predicts new CSV files from the command line.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import shardtrain
from shardtrain.cli import main
from shardtrain.core import offline
from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets import DATASETS
from shardtrain.predict import METADATA_KEY, predict
from shardtrain.shards import ShardSet
from shardtrain.shards import format as fmt
from shardtrain.shards.writer import build_table, write_index, write_shard
from shardtrain.stages.runner import SplitJob
from shardtrain.training.stage import COMPLETE_NAME
from tests.conftest import run_cli
from tests.s3server import moto_endpoint, s3  # noqa: F401  (pytest fixtures)

FAST = ["augment.copies=0", "train.max_epochs=2", "train.accelerator=cpu"]
DIGITS = [str(i) for i in range(10)]


def _new_run(out, before):
    """The one run directory under ``out/runs`` that is not in ``before``."""
    (run_dir,) = set((out / "runs").iterdir()) - set(before)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One output root with a complete MLP run and a complete bagging run (same shards)."""
    out = tmp_path_factory.mktemp("predict")
    shardtrain.run("demo", out=out, overrides=FAST, executor="local")
    mlp = _new_run(out, [])
    shardtrain.run("demo", out=out, overrides=[*FAST, "model.kind=bagging", "model.members=3"], executor="local")
    bagging = _new_run(out, [mlp])
    return {"out": out, "mlp": mlp, "bagging": bagging, "test": out / "shards" / "prepare" / "test"}


def _test_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["test"]


def _probs(table, prefix=""):
    names = [c for c in table.column_names if c.startswith(f"{prefix}prob_")]
    return names, np.stack([table[c].to_numpy() for c in names], 1)  # (N, C)


def test_test_shards_reproduce_the_runs_test_accuracy(runs, tmp_path):
    out = tmp_path / "sub" / "preds.parquet"  # the parent is created
    res = predict(runs["mlp"], runs["test"], out)
    expected = _test_metrics(runs["mlp"])
    assert res.path == out and out.is_file() and res.rejects == 0 and res.rejects_path is None
    assert res.metrics["accuracy"] == expected["accuracy"] and res.metrics["samples"] == expected["samples"]
    table = pq.read_table(out)
    assert res.rows == table.num_rows == ShardSet(runs["test"]).rows
    assert table.column_names == ["sample_id", "pred", *[f"prob_{c}" for c in DIGITS], "label"]
    assert str(table.schema.field("prob_0").type) == "float" and str(table.schema.field("pred").type) == "string"
    names, probs = _probs(table)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    pred = table["pred"].to_pylist()
    assert pred == [DIGITS[i] for i in probs.argmax(1)]
    ss = ShardSet(runs["test"])
    assert table["sample_id"].to_pylist() == ss.concat("sample_id").tolist()  # shard order
    assert table["label"].to_pylist() == [DIGITS[i] for i in ss.concat("label")]
    hits = np.mean(np.asarray(pred) == np.asarray(table["label"].to_pylist()))
    assert hits == pytest.approx(expected["accuracy"])
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    assert meta["run_dir"] == str(runs["mlp"]) and meta["dataset"] == "digits"
    assert meta["checkpoint"].endswith(".ckpt") and meta["classes"] == {"label": DIGITS}


def test_a_run_name_under_out_dir_works_too(runs, tmp_path):
    res = predict(runs["mlp"].name, runs["test"], tmp_path / "p.parquet", out_dir=runs["out"], batch_size=50)
    assert res.metrics["accuracy"] == _test_metrics(runs["mlp"])["accuracy"]  # batching changes nothing


def test_bagging_writes_the_ensemble_mean_and_each_member(runs, tmp_path):
    res = predict(runs["bagging"], runs["test"], tmp_path / "bag.parquet")
    assert res.metrics["accuracy"] == _test_metrics(runs["bagging"])["accuracy"]
    table = pq.read_table(res.path)
    assert "members" in table.column_names
    members = np.asarray(table["members"].to_pylist(), dtype=np.float32)  # (N, K, C)
    assert members.shape == (table.num_rows, 3, 10)
    np.testing.assert_allclose(members.sum(-1), 1.0, atol=1e-5)
    _, probs = _probs(table)
    np.testing.assert_allclose(members.mean(1), probs, atol=1e-6)  # the ensemble is the members' mean
    assert not np.allclose(members[:, 0], members[:, 1])  # different members, not one copied


def _relabel(src, dst, labels):
    """Copy the prepared digits train/test shards to ``dst`` with other label columns.

    ``labels`` maps a column name to ``(fn(digit) -> values, class names | None)``.
    """
    for split in ("train", "test"):
        ss = ShardSet(src / "shards" / "prepare" / split)
        y = ss.concat("label")
        cols = {"sample_id": ss.concat("sample_id"), "x": ss.concat("x"), **{c: f(y) for c, (f, _) in labels.items()}}
        classes = {c: names for c, (_, names) in labels.items()}
        directory = dst / "shards" / "prepare" / split
        directory.mkdir(parents=True)
        entry = write_shard(directory / fmt.shard_name(0, 1), cols, (0, 1), classes)
        schema = [{"name": f.name, "type": str(f.type)} for f in build_table(cols).schema]
        write_index(directory, {**ss.index, "rows": entry["rows"], "shards": [entry], "schema": schema,
                                "labels": {c: {"classes": v} for c, v in classes.items()}})


def _train(out, overrides):
    """Train and evaluate on the shards already under ``out``; returns the run directory."""
    shardtrain.run("demo", stage="train", out=out, overrides=overrides)
    shardtrain.run("demo", stage="evaluate", out=out, overrides=overrides)
    (run_dir,) = (out / "runs").iterdir()
    return run_dir


def test_multitask_with_a_regression_task_writes_columns_per_task(runs, tmp_path):
    out = tmp_path / "mt"
    _relabel(runs["out"], out, {"label_digit": (lambda y: y, DIGITS),
                                "label_value": (lambda y: y.astype(np.float32) / 9.0, None)})
    run_dir = _train(out, [*FAST, "model.kind=multitask", "name=mt"])
    res = predict(run_dir, out / "shards" / "prepare" / "test", tmp_path / "mt.parquet")
    expected = _test_metrics(run_dir)
    assert res.metrics["digit"]["accuracy"] == expected["digit"]["accuracy"]
    assert res.metrics["value"]["rmse"] == pytest.approx(expected["value"]["rmse"], rel=1e-12)
    assert "accuracy" not in res.metrics["value"]
    table = pq.read_table(res.path)
    assert table.column_names == ["sample_id", "digit.pred", *[f"digit.prob_{c}" for c in DIGITS], "value.pred",
                                  "label_digit", "label_value"]
    _, probs = _probs(table, "digit.")
    assert table["digit.pred"].to_pylist() == [DIGITS[i] for i in probs.argmax(1)]
    assert str(table.schema.field("value.pred").type) == "float" == str(table.schema.field("label_value").type)
    err = table["value.pred"].to_numpy() - table["label_value"].to_numpy()
    assert np.sqrt(np.mean(err ** 2)) == pytest.approx(expected["value"]["rmse"], rel=1e-5)
    assert table["label_digit"].to_pylist() == [DIGITS[round(v * 9)] for v in table["label_value"].to_pylist()]


def test_an_incomplete_run_is_refused(runs, tmp_path):
    crashed = runs["out"] / "runs" / "29990101-000000-demo"
    shutil.copytree(runs["mlp"], crashed)
    (crashed / COMPLETE_NAME).unlink()
    try:
        with pytest.raises(ShardtrainError, match="did not finish"):
            predict(crashed, runs["test"], tmp_path / "p.parquet")
        with pytest.raises(ShardtrainError, match="not a run directory"):
            predict("nope", runs["test"], tmp_path / "p.parquet", out_dir=runs["out"])
    finally:
        shutil.rmtree(crashed)
    assert not (tmp_path / "p.parquet").exists()


def test_an_existing_output_is_refused_unless_overwrite(runs, tmp_path):
    out = tmp_path / "p.parquet"
    out.write_bytes(b"mine")
    with pytest.raises(ShardtrainError, match="exists; pass --overwrite"):
        predict(runs["mlp"], runs["test"], out)
    assert out.read_bytes() == b"mine"
    res = predict(runs["mlp"], runs["test"], out, overwrite=True)
    assert pq.read_table(out).num_rows == res.rows > 0
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]  # no temporary files left behind


def test_shards_with_other_features_are_refused(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["test"], other)
    index = json.loads((other / fmt.INDEX_NAME).read_text())
    index["features"]["x"]["shape"] = [4, 16]
    (other / fmt.INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(ShardtrainError, match="do not match the run's"):
        predict(runs["mlp"], other, tmp_path / "p.parquet")
    with pytest.raises(ShardtrainError, match="predict is not supported"):  # raw data the kind cannot read
        predict(runs["mlp"], other / fmt.INDEX_NAME, tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def _reject_ids(ids):
    """A batch function rejecting the rows whose sample id is in ``ids``."""
    def fn(batch, ctx):
        bad = np.isin(np.asarray(batch["sample_id"]), ids)
        return {**batch, "reject_reason": np.where(bad, "bad_row", ""),
                "reject_detail": np.where(bad, "test.csv: a row the test rejects", "")}
    return fn


@pytest.fixture
def raw_job(runs, monkeypatch):
    """Give the digits kind a ``predict_job``: the test split's rows, rejecting the sample ids ``seen["reject"]``."""
    ss = ShardSet(runs["test"])
    seen = {}

    def predict_job(self, cfg, fitted, path):
        seen["fitted"] = fitted
        source = {"sample_id": ss.concat("sample_id"), "x": ss.concat("x"), "label": ss.concat("label")}
        return SplitJob("predict", source, _reject_ids(seen["reject"]), None,
                        {"features": fitted["features"], "labels": {"label": {"classes": DIGITS}}})

    monkeypatch.setattr(DATASETS["digits"], "predict_job", predict_job)
    return seen


def test_raw_data_goes_through_the_kinds_predict_job(runs, raw_job, tmp_path):
    ids = ShardSet(runs["test"]).concat("sample_id")
    rejected = raw_job["reject"] = ids[[3, 100]]  # 2 of 359 rows: under the 1% allowed
    out = tmp_path / "raw.parquet"
    res = predict(runs["mlp"], runs["test"] / fmt.INDEX_NAME, out)  # any path that is not a shard directory
    assert raw_job["fitted"]["split"] == "train" and raw_job["fitted"]["labels"]["label"]["classes"] == DIGITS
    assert res.rejects == len(rejected) > 0 and res.rows == len(ids) - len(rejected)
    lines = [json.loads(line) for line in res.rejects_path.read_text().splitlines()]
    assert res.rejects_path == tmp_path / "raw.parquet.rejects.jsonl"
    assert [r["sample_id"] for r in lines] == rejected.tolist() and {r["reason"] for r in lines} == {"bad_row"}
    # The same rows predict the same as from the shards.
    shard_preds = pq.read_table(predict(runs["mlp"], runs["test"], tmp_path / "s.parquet").path).to_pandas()
    raw_preds = pq.read_table(out).to_pandas()
    kept = shard_preds[~shard_preds.sample_id.isin(rejected)].reset_index(drop=True)
    assert raw_preds.equals(kept)


def test_too_many_rejects_fail_without_output(runs, raw_job, tmp_path):
    raw_job["reject"] = ShardSet(runs["test"]).concat("sample_id")[::10]  # a tenth: over max_reject_fraction (1%)
    out = tmp_path / "raw.parquet"
    with pytest.raises(ShardtrainError, match=r"rejected \(.*> prepare.max_reject_fraction 1.0%\).*bad_row"):
        predict(runs["mlp"], runs["test"] / fmt.INDEX_NAME, out)
    assert not out.exists()
    assert (tmp_path / "raw.parquet.rejects.jsonl").is_file()  # what was rejected, to look at
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.parquet.rejects.jsonl"]  # no work dir left


def test_cli_predict_exits_2_with_one_line_on_bad_input(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(offline.QUIET_ENV, "0")  # main() exports it; restored after the test
    out = tmp_path / "p.parquet"
    base = ["predict", str(runs["mlp"]), "--input", str(runs["test"]), "--out", str(out)]
    try:
        assert main(base) == 0
        assert main(base) == 2  # exists
        assert capsys.readouterr().err.strip().splitlines()[-1] == \
            f"error: {out}: exists; pass --overwrite (overwrite=True) to replace it"
        assert main([*base, "--overwrite", "--batch-size", "7"]) == 0
        assert main([*base, "--overwrite", "--batch-size", "0"]) == 2
        assert capsys.readouterr().err.strip().endswith("error: batch_size: must be an integer >= 1, got 0")
        assert main(["predict", "nope", "--out-dir", str(runs["out"]), "--input", str(runs["test"]),
                     "--out", str(out)]) == 2
        assert "not a run directory" in capsys.readouterr().err
    finally:
        offline.show_third_party()
    with pytest.raises(SystemExit) as exc:  # --input is required: a usage error
        main(["predict", str(runs["mlp"]), "--out", str(out)])
    assert exc.value.code == 2 and "--input" in capsys.readouterr().err


def _churn(n, rng):
    """A small table: two numeric columns, a categorical one, a yes/no label that depends on all three."""
    import pandas as pd

    u, v, plan = rng.normal(size=n).round(3), rng.normal(size=n).round(3), rng.choice(["basic", "pro"], n)
    return pd.DataFrame({"u": u, "v": v, "plan": plan, "y": np.where(u + v + (plan == "pro") > 0.5, "yes", "no")})


def test_cli_predicts_a_new_csv_with_a_table_run(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    _churn(300, rng).to_csv(tmp_path / "train.csv", index=False)
    test = _churn(200, rng)
    test.to_csv(tmp_path / "test.csv", index=False)
    options = {"path": str(tmp_path / "train.csv"), "test_path": str(tmp_path / "test.csv"), "label": "y"}
    res = shardtrain.run({"name": "tbl", "dataset": {"name": "table", "options": options},
                          "train": {"accelerator": "cpu", "max_epochs": 3}}, out=tmp_path / "out", executor="local")
    run_dir, expected = res["train"].run_dir, res["evaluate"]["test"]
    out = tmp_path / "new.parquet"
    cli = run_cli("predict", run_dir.name, "--out-dir", str(tmp_path / "out"), "--input", str(tmp_path / "test.csv"),
                  "--out", str(out))
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert cli.stdout.strip() == (f"predict: 200 rows, 0 rejected -> {out}; accuracy {expected['accuracy']:.4f} "
                                  f"(200 labelled)")  # the run's own test file: its test accuracy
    table = pq.read_table(out)
    assert table.column_names == ["sample_id", "pred", "prob_no", "prob_yes", "label"]
    assert table["label"].to_pylist() == test["y"].tolist()

    monkeypatch.setenv(offline.QUIET_ENV, "0")
    capsys.readouterr()  # the training's output
    base = ["predict", str(run_dir), "--out", str(out), "--overwrite", "-q"]
    try:
        test.drop(columns="y").to_csv(tmp_path / "unlabelled.csv", index=False)
        assert main([*base, "--input", str(tmp_path / "unlabelled.csv")]) == 0
        assert capsys.readouterr().out.strip() == f"predict: 200 rows, 0 rejected -> {out}"  # no labels, no score
        assert "label" not in pq.read_table(out).column_names
        bad = test.astype(str)
        bad.loc[5, "u"] = "abc"  # 1 of 200 rows: under the default 1% allowed
        bad.to_csv(tmp_path / "bad.csv", index=False)
        assert main([*base, "--input", str(tmp_path / "bad.csv")]) == 0
        rejects = out.with_name("new.parquet.rejects.jsonl")
        assert f"199 rows, 1 rejected -> {out} (rejects: {rejects})" in capsys.readouterr().out
        (record,) = [json.loads(line) for line in rejects.read_text().splitlines()]
        assert record["sample_id"] == 5 and record["reason"] == "non_numeric" and "'abc'" in record["detail"]
        bad.loc[6:9, "u"] = "abc"  # 5 of 200: over it
        bad.to_csv(tmp_path / "bad.csv", index=False)
        before = out.read_bytes()
        assert main([*base, "--input", str(tmp_path / "bad.csv")]) == 2
        assert "5 of 200 records rejected" in capsys.readouterr().err
        assert out.read_bytes() == before and len(rejects.read_text().splitlines()) == 5  # nothing written but those
    finally:
        offline.show_third_party()


def test_predict_reads_raw_input_from_s3_like_the_local_file(tmp_path, s3):  # noqa: F811
    from shardtrain.shards import storage

    rng = np.random.default_rng(1)
    _churn(200, rng).to_csv(tmp_path / "train.csv", index=False)
    _churn(80, rng).to_csv(tmp_path / "new.csv", index=False)
    options = {"path": str(tmp_path / "train.csv"), "label": "y"}
    res = shardtrain.run({"name": "tbl", "dataset": {"name": "table", "options": options},
                          "train": {"accelerator": "cpu", "max_epochs": 1}}, out=tmp_path / "out", executor="local")
    uri = s3.uri("incoming/new.csv")
    storage.write_bytes(uri, (tmp_path / "new.csv").read_bytes())
    local = predict(res["train"].run_dir, tmp_path / "new.csv", tmp_path / "local.parquet")
    remote = predict(res["train"].run_dir, uri, tmp_path / "remote.parquet")
    assert remote.rows == local.rows == 80
    a, b = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "remote.parquet")
    assert a.select(["sample_id", "pred", "label"]).equals(b.select(["sample_id", "pred", "label"]))
    assert json.loads(b.schema.metadata[METADATA_KEY])["input"] == uri  # recorded redacted (no userinfo here)
    with pytest.raises(ShardtrainError, match="no such object"):
        predict(res["train"].run_dir, s3.uri("incoming/missing.csv"), tmp_path / "x.parquet")

"""The ``table`` dataset kind: formats, splits, rejects, the transform fitted on train, and baselines.

Every table here is small and written by the test into ``tmp_path``. The two training
tests run the kind's default recipe and compare with scikit-learn on the very same split
(ridge regression: within 1% RMSE; logistic regression: within 2 accuracy points).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.feather as feather
import pytest

import shardtrain
from shardtrain.core.errors import ShardtrainError


def _config(options: dict, **sections) -> dict:
    """A table config with CPU training and a generous reject allowance (the fixtures are dirty on purpose)."""
    cfg = {"name": "tbl", "dataset": {"name": "table", "options": options},
           "prepare": {"max_reject_fraction": 0.5}, "train": {"accelerator": "cpu"}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def _prepare(options: dict, out: Path, **sections) -> dict:
    """Run the prepare stage; returns ``{split: index}``."""
    return shardtrain.run(_config(options, **sections), stage="prepare", out=out, executor="local")["prepare"]


def _load(out: Path, split: str) -> dict[str, np.ndarray]:
    """A split's shards as numpy: ``sample_id`` (N,), ``x`` (N, F), ``label`` (N,)."""
    table = pads.dataset(out / "shards" / "prepare" / split, format="arrow").to_table()
    x = table["x"].combine_chunks()
    return {"sample_id": table["sample_id"].to_numpy(), "label": table["label"].to_numpy(),
            "x": x.flatten().to_numpy().reshape(len(table), x.type.list_size)}


def _rejects(out: Path, split: str) -> list[dict]:
    path = out / "shards" / "prepare" / split / "_rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _survey(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A survey-like table: numeric text columns, categoricals, a three-class label, a split column."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    region = rng.choice(["north", "south", "east", "west"], n)
    smoker = rng.choice(["yes", "no"], n)
    score = age / 10 + (region == "north") * 3 + rng.normal(0, 1, n)
    y = np.where(score > 7, "high", np.where(score > 5, "mid", "low"))
    split = rng.choice(["train", "val", "test"], n, p=[0.7, 0.15, 0.15])
    return pd.DataFrame({"age": age.astype(str), "income": rng.normal(50, 10, n).round(2).astype(str),
                         "region": region, "smoker": smoker, "split": split, "y": y})


def test_csv_dirty_rows_reject_reasons_counts_and_imputation(tmp_path: Path) -> None:
    df = _survey()
    train_rows = np.flatnonzero(df["split"] == "train")
    test_rows = np.flatnonzero(df["split"] == "test")
    bad_num, empty_label, missing_income, missing_region = train_rows[:4]
    df.loc[bad_num, "age"] = "abc"
    df.loc[empty_label, "y"] = ""
    df.loc[missing_income, "income"] = ""
    df.loc[missing_region, "region"] = ""
    df.loc[train_rows[4], "split"] = "holdout"
    df.loc[test_rows[0], "y"] = "unheard-of"
    df.to_csv(tmp_path / "survey.csv", index=False)
    opts = {"path": "survey.csv", "label": "y", "split_col": "split"}
    out = tmp_path / "out"
    idx = shardtrain.run(_config(opts), stage="prepare", out=out, executor="local", data_dir=str(tmp_path))["prepare"]

    assert idx["train"]["rejects"]["reasons"] == {"non_numeric": 1, "empty_label": 1, "bad_split": 1}
    assert idx["test"]["rejects"]["reasons"] == {"unknown_label": 1}
    assert idx["val"]["rejects"]["count"] == 0
    details = {r["reason"]: r["detail"] for r in _rejects(out, "train")}
    assert details["non_numeric"] == f"survey.csv:{bad_num + 1} column 'age': value 'abc'"
    assert "holdout" in details["bad_split"]
    assert {r["sample_id"] for r in _rejects(out, "test")} == {int(test_rows[0])}
    assert idx["train"]["rows"] == len(train_rows) - 3  # bad_num, empty_label, holdout rejected; 2 imputed kept
    assert idx["train"]["extra"]["split_rule"] == {"kind": "column", "column": "split"}

    transform = idx["train"]["transform"]
    assert transform["columns"] == {"age": "numeric", "income": "numeric", "region": "categorical",
                                    "smoker": "categorical"}
    assert transform["classes"] == ["high", "low", "mid"]
    names = idx["train"]["features"]["x"]["names"]
    assert "income:missing" in names and "age:missing" not in names and "region=<missing>" in names
    assert idx["train"]["extra"]["imputed"] == {"income": 1, "region": 1}
    train = _load(out, "train")
    kept = {sid: i for i, sid in enumerate(train["sample_id"])}
    inc = next(s for s in transform["numeric"] if s["name"] == "income")
    row = train["x"][kept[missing_income]]
    assert row[names.index("income")] == pytest.approx((inc["median"] - inc["mean"]) / inc["std"], abs=1e-6)
    assert row[names.index("income:missing")] == 1.0
    assert train["x"][:, names.index("income:missing")].sum() == 1.0
    assert train["x"][kept[missing_region], names.index("region=<missing>")] == 1.0
    assert train["x"][:, names.index("region=<missing>")].sum() == 1.0
    observed = pd.to_numeric(df.loc[[i for i in train_rows if i in kept and i != missing_income], "income"])
    assert inc["median"] == pytest.approx(float(observed.median()))

    # missing: reject -> the two rows with an empty cell are rejects naming their column, nothing is imputed
    out2 = tmp_path / "out2"
    idx2 = _prepare({**opts, "path": str(tmp_path / "survey.csv"), "missing": "reject"}, out2)
    assert idx2["train"]["rejects"]["reasons"] == {"non_numeric": 1, "empty_label": 1, "bad_split": 1,
                                                   "missing_value": 2}
    missing = sorted(r["detail"] for r in _rejects(out2, "train") if r["reason"] == "missing_value")
    assert missing == sorted([f"survey.csv:{missing_income + 1} column 'income': empty",
                              f"survey.csv:{missing_region + 1} column 'region': empty"])
    assert not any(n.endswith(":missing") or n.endswith("=<missing>") for n in idx2["train"]["features"]["x"]["names"])


def test_bad_inputs_fail_before_any_output(tmp_path: Path) -> None:
    _survey(40).to_csv(tmp_path / "s.csv", index=False)
    out = tmp_path / "out"
    cases = {"nope.csv": ("path", str(tmp_path / "nope.csv"), "y", {}),
             "label": ("path", str(tmp_path / "s.csv"), "target", {}),
             "numeric": ("path", str(tmp_path / "s.csv"), "y", {"numeric": ["wage"]})}
    for what, (_, path, label, extra) in cases.items():
        with pytest.raises(ShardtrainError) as err:
            _prepare({"path": path, "label": label, **extra}, out)
        msg = str(err.value)
        assert "\n" not in msg
        assert {"nope.csv": "nope.csv", "label": "'target'", "numeric": "'wage'"}[what] in msg
        assert "s.csv" in msg or what == "nope.csv"
    assert not out.exists()


def test_test_path_and_shifted_test_distribution_uses_train_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train = pd.DataFrame({"a": rng.normal(0, 2, 400), "c": rng.choice(["p", "q"], 400), "y": rng.integers(0, 2, 400)})
    test = pd.DataFrame({"a": rng.normal(100, 2, 50), "c": rng.choice(["p", "q", "r"], 50), "y": rng.integers(0, 2, 50)})
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    out = tmp_path / "out"
    idx = _prepare({"path": str(tmp_path / "train.parquet"), "test_path": str(tmp_path / "test.parquet"),
                    "label": "y"}, out, seed=3)
    assert idx["test"]["rows"] == 50 and idx["train"]["rows"] + idx["val"]["rows"] == 400
    assert idx["train"]["extra"]["split_rule"]["kind"] == "files+fractions"
    assert idx["train"]["transform"]["task"] == "classification"  # integer label, 2 values
    spec = idx["train"]["transform"]["numeric"][0]
    train_ids = _load(out, "train")["sample_id"]
    assert spec["mean"] == pytest.approx(train["a"].to_numpy()[train_ids].mean())
    assert all(idx[s]["transform"] == idx["train"]["transform"] for s in ("val", "test"))
    test_x = _load(out, "test")
    names = idx["test"]["features"]["x"]["names"]
    # standardised with train's mean/std: the shifted test column sits ~100/std away, not at 0
    assert test_x["x"][:, names.index("a")].mean() == pytest.approx((100 - spec["mean"]) / spec["std"], rel=0.05)
    assert np.array_equal(test_x["sample_id"], np.arange(400, 450))  # rows after the training input's
    unseen = (test["c"] == "r").to_numpy()
    assert np.all(test_x["x"][unseen, names.index("c=<other>")] == 1.0)
    assert idx["test"]["extra"]["other"] == {"c": int(unseen.sum())}

    # predict_job re-applies the fitted transform: the test file gives the test shards' x; a label outside
    # the classes is -1 (not a reject); a file without the label column has no label
    from shardtrain.config import from_dict

    cfg = from_dict(_config({"path": str(tmp_path / "train.parquet"), "test_path": str(tmp_path / "test.parquet"),
                             "label": "y"}, seed=3))
    job = cfg.dataset.predict_job(cfg, idx["train"], tmp_path / "test.parquet")
    assert job.split == "predict" and job.describe["transform"] == idx["train"]["transform"]
    encoded = job.fn(job.source, job.ctx)
    np.testing.assert_array_equal(encoded["x"], test_x["x"])
    np.testing.assert_array_equal(encoded["label"], test_x["label"])
    test.assign(y=np.where(np.arange(50) < 5, 7, test["y"])).to_parquet(tmp_path / "new.parquet")
    job = cfg.dataset.predict_job(cfg, idx["train"], tmp_path / "new.parquet")
    encoded = job.fn(job.source, job.ctx)
    assert np.all(encoded["label"][:5] == -1) and np.all(encoded["label"][5:] >= 0)
    test.drop(columns=["y"]).to_parquet(tmp_path / "unlabelled.parquet")
    job = cfg.dataset.predict_job(cfg, idx["train"], tmp_path / "unlabelled.parquet")
    assert "label" not in job.fn(job.source, job.ctx) and not job.pre_rejects


def test_formats_glob_and_directory_give_the_same_shards(tmp_path: Path) -> None:
    df = _survey(120).drop(columns=["split"])
    df["age"] = df["age"].astype(int)
    df["income"] = df["income"].astype(float)
    df.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in df.to_dict(orient="records")))
    feather.write_feather(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "t.feather")
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[chunk].to_csv(parts / f"part-{i}.csv", index=False)
    shards = {}
    for name, path in {"csv": "t.csv", "jsonl": "t.jsonl", "feather": "t.feather", "dir": "parts",
                       "glob": "parts/part-*.csv"}.items():
        idx = _prepare({"path": str(tmp_path / path), "label": "y"}, tmp_path / name)
        assert idx["train"]["transform"]["columns"]["age"] == "numeric"
        shards[name] = {s: _load(tmp_path / name, s) for s in ("train", "val", "test")}
    for name in ("jsonl", "feather", "dir", "glob"):
        for s in ("train", "val", "test"):
            assert np.array_equal(shards[name][s]["sample_id"], shards["csv"][s]["sample_id"]), (name, s)
            np.testing.assert_allclose(shards[name][s]["x"], shards["csv"][s]["x"], rtol=1e-6, err_msg=name)


def test_regression_label_rejects_and_task_inference(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"a": rng.normal(0, 1, 100).round(3), "y": rng.normal(10, 3, 100).round(3).astype(str)})
    df.loc[4, "y"] = "n/a?"
    df.loc[6, "y"] = ""
    df.to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "out"
    idx = _prepare({"path": str(tmp_path / "r.csv"), "label": "y"}, out)
    assert idx["train"]["transform"]["task"] == "regression" and idx["train"]["labels"]["label"]["classes"] is None
    assert idx["train"]["rejects"]["reasons"] == {"non_numeric": 1, "empty_label": 1}
    assert [r["detail"] for r in _rejects(out, "train") if r["reason"] == "non_numeric"] == [
        "r.csv:5 column 'y': value 'n/a?'"]
    train = _load(out, "train")
    assert train["label"].dtype == np.float32
    np.testing.assert_allclose(train["label"], pd.to_numeric(df["y"], errors="coerce").to_numpy()[train["sample_id"]], rtol=1e-6)
    # the same file with task: classification -> every distinct value is a class; integers -> classification
    df["k"] = rng.integers(0, 4, 100)
    df.drop(columns=["y"]).to_csv(tmp_path / "k.csv", index=False)
    idx = _prepare({"path": str(tmp_path / "k.csv"), "label": "k"}, tmp_path / "out2")
    assert idx["train"]["transform"]["task"] == "classification"
    assert idx["train"]["labels"]["label"]["classes"] == ["0", "1", "2", "3"]


def _sk_split(df: pd.DataFrame, out: Path, label: str) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    """The rows shardtrain put in train and test, for the scikit-learn baseline."""
    tr, te = _load(out, "train")["sample_id"], _load(out, "test")["sample_id"]
    X, y = df.drop(columns=[label]), df[label].to_numpy()
    return X.iloc[tr], y[tr], X.iloc[te], y[te]


def _sk_features(num: list[str], cat: list[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer([("n", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
                              ("c", OneHotEncoder(handle_unknown="ignore"), cat)])


def test_parquet_regression_matches_ridge(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(7)
    n = 400
    df = pd.DataFrame({"x1": rng.normal(0, 1, n), "x2": rng.normal(5, 2, n), "x3": rng.uniform(-1, 1, n),
                       "site": rng.choice(["a", "b", "c"], n)})
    df["target"] = (20 + 4 * df["x1"] - 1.5 * df["x2"] + 3 * df["x3"] ** 2 + (df["site"] == "b") * 2
                    + rng.normal(0, 1, n))
    df.loc[rng.choice(n, 15, replace=False), "x2"] = np.nan
    df.to_parquet(tmp_path / "reg.parquet")
    out = tmp_path / "out"
    res = shardtrain.run(_config({"path": str(tmp_path / "reg.parquet"), "label": "target"}), stage="all", out=out,
                         executor="local")
    idx = res["prepare"]["train"]
    assert idx["labels"]["label"]["classes"] is None and idx["transform"]["task"] == "regression"
    assert _load(out, "train")["label"].dtype == np.float32
    Xtr, ytr, Xte, yte = _sk_split(df, out, "target")
    ridge = make_pipeline(_sk_features(["x1", "x2", "x3"], ["site"]), Ridge(alpha=1.0)).fit(Xtr, ytr)
    baseline = float(np.sqrt(np.mean((ridge.predict(Xte) - yte) ** 2)))
    rmse = res["evaluate"]["test"]["rmse"]
    assert rmse <= 1.01 * baseline, (rmse, baseline)


def _classification_table(n: int = 1200, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"u": rng.normal(0, 1, n), "v": rng.normal(0, 1, n), "w": rng.exponential(2, n),
                       "plan": rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])})
    logit = 1.5 * df["u"] - df["v"] + 0.4 * df["w"] + (df["plan"] == "pro") * 1.0 - 0.8
    df["churn"] = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df.loc[rng.choice(n, 12, replace=False), "plan"] = None
    return df


def test_classification_matches_logistic_regression_and_predict_reproduces_it(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    df = _classification_table()
    df.to_csv(tmp_path / "churn.csv", index=False)
    out = tmp_path / "out"
    # a larger test share than the default split: 360 test rows (a 180-row test set has a 3-point
    # standard error, too coarse for a 2-point comparison)
    options = {"path": str(tmp_path / "churn.csv"), "label": "churn", "split": [0.6, 0.1, 0.3]}
    res = shardtrain.run(_config(options), stage="all", out=out, executor="local")
    Xtr, ytr, Xte, yte = _sk_split(df, out, "churn")
    Xtr, Xte = Xtr.fillna({"plan": "<missing>"}), Xte.fillna({"plan": "<missing>"})
    lr = make_pipeline(_sk_features(["u", "v", "w"], ["plan"]), LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
    baseline = float((lr.predict(Xte) == yte).mean())
    accuracy = res["evaluate"]["test"]["accuracy"]
    assert accuracy >= baseline - 0.02, (accuracy, baseline)

    from shardtrain.predict import predict

    test_ids = _load(out, "test")["sample_id"]
    df.iloc[test_ids].to_csv(tmp_path / "test.csv", index=False)
    result = predict(res["train"].run_dir, str(tmp_path / "test.csv"), tmp_path / "pred.parquet")
    assert result.metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)

"""The ``text`` dataset kind: file layouts, given split files, one label vocabulary, rejects per split,
the ``sms-spam`` kind built on it, and the default recipe against a TF-IDF logistic regression."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shardtrain.api import run
from shardtrain.config import from_dict, load_config, to_dict
from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.text import SmsSpam, Text
from shardtrain.shards import ShardSet
from shardtrain.shards import format as fmt

WORDS = {"pos": ["good", "great", "fine", "lovely", "nice"], "neg": ["bad", "awful", "poor", "ugly", "sad"]}


def _prepare(tmp_path: Path, options: dict, name: str = "out", **sections) -> dict:
    """Run the prepare stage of a ``text`` config; returns the indexes by split."""
    raw = {"dataset": {"name": "text", "options": options}, **sections}
    return run(raw, "prepare", tmp_path / name)["prepare"]


def _rejects(tmp_path: Path, split: str, name: str = "out") -> list[dict]:
    path = tmp_path / name / "shards" / "prepare" / split / fmt.REJECTS_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _labels(tmp_path: Path, split: str, name: str = "out") -> list[int]:
    ss = ShardSet(tmp_path / name / "shards" / "prepare" / split)
    return [int(v) for part in ss.column("label") for v in part]


def _sentences(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (label, text) pairs of two classes told apart by their words."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        words = list(rng.choice(WORDS[label], 3)) + list(rng.choice(["the", "a", "day", "film", "it"], 3))
        out.append((label, " ".join(rng.permutation(words))))
    return out


def test_tsv_without_header_by_index(tmp_path):
    rows = [(str(i % 2), f"text number {i} {'yes' if i % 2 else 'no'}") for i in range(40)]
    path = tmp_path / "d.tsv"
    path.write_text("".join(f"{t}\t{lab}\n" for lab, t in rows))           # text first, label second
    idx = _prepare(tmp_path, {"path": str(path), "text": 0, "label": 1, "split": [0.5, 0.25, 0.25]})
    assert set(idx) == {"train", "val", "test"}
    assert idx["train"]["labels"]["label"] == {"classes": ["0", "1"], "classes_from": "train",
                                               "counts": {"0": 10, "1": 10}}
    assert sum(i["rows"] for i in idx.values()) == 40 and idx["train"]["dataset"] == "text"
    assert idx["train"]["features"]["x"]["kind"] == "sparse"
    assert idx["train"]["transform"]["reader"]["text"] == 0


def test_default_columns_are_label_then_text(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("".join(f"{lab}\t{t}\n" for lab, t in _sentences(30)))
    idx = _prepare(tmp_path, {"path": str(path)})
    assert idx["train"]["labels"]["label"]["classes"] == ["neg", "pos"]


def test_csv_with_header_and_names(tmp_path):
    path = tmp_path / "d.csv"
    lines = ["id,review,sentiment"] + [f'{i},"{t}, really",{lab}' for i, (lab, t) in enumerate(_sentences(30))]
    path.write_text("\n".join(lines) + "\n")
    idx = _prepare(tmp_path, {"path": str(path), "sep": ",", "header": True, "text": "review",
                              "label": "sentiment", "split": [0.6, 0.2, 0.2]})
    assert sum(i["rows"] for i in idx.values()) == 30 and all(i["rejects"]["count"] == 0 for i in idx.values())
    assert idx["test"]["labels"]["label"]["classes"] == ["neg", "pos"]
    with pytest.raises(ShardtrainError, match="header has no column 'body'"):
        _prepare(tmp_path, {"path": str(path), "sep": ",", "header": True, "text": "body"}, name="o2")
    with pytest.raises(ShardtrainError, match="is a column name but d.csv has no header"):
        _prepare(tmp_path, {"path": str(path), "sep": ",", "text": "review"}, name="o3")


def test_json_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    recs = [{"text": t, "label": lab, "n": i} for i, (lab, t) in enumerate(_sentences(30))]
    recs[3] = {"label": "pos"}                                            # no text key
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json\n")
    idx = _prepare(tmp_path, {"path": str(path), "split": [0.6, 0.2, 0.2]}, prepare={"max_reject_fraction": 0.5})
    assert idx["train"]["labels"]["label"]["classes"] == ["neg", "pos"]
    rejects = [r for s in idx for r in _rejects(tmp_path, s)]
    assert sorted(r["reason"] for r in rejects) == ["bad_json", "missing_field"]
    assert {r["detail"].split(":")[:2][1] for r in rejects} == {"4", "31"}   # file:line
    assert sum(i["rows"] for i in idx.values()) == 29


def test_given_val_and_test_files(tmp_path):
    data = _sentences(60)
    for name, part in (("tr.tsv", data[:40]), ("va.tsv", data[40:50]), ("te.tsv", data[50:])):
        (tmp_path / name).write_text("".join(f"{lab}\t{t}\n" for lab, t in part))
    raw = {"dataset": {"name": "text", "options": {"path": "tr.tsv", "val_path": "va.tsv", "test_path": "te.tsv"}}}
    idx = run(raw, "prepare", tmp_path / "out", data_dir=str(tmp_path))["prepare"]   # paths under --data-dir
    assert {s: i["rows"] for s, i in idx.items()} == {"train": 40, "val": 10, "test": 10}
    assert idx["train"]["extra"]["files"] == {"train": "tr.tsv", "val": "va.tsv", "test": "te.tsv"}
    only_test = {"path": str(tmp_path / "tr.tsv"), "test_path": str(tmp_path / "te.tsv"), "split": [1.0, 0.0, 0.0]}
    idx = _prepare(tmp_path, only_test, name="o2")
    assert {s: i["rows"] for s, i in idx.items()} == {"train": 40, "test": 10}   # val carved by the DataModule


def _vocab_files(tmp_path: Path, train_rows: list[str], test_rows: list[str]) -> dict:
    (tmp_path / "tr.tsv").write_text("".join(r + "\n" for r in train_rows))
    (tmp_path / "te.tsv").write_text("".join(r + "\n" for r in test_rows))
    return {"path": str(tmp_path / "tr.tsv"), "test_path": str(tmp_path / "te.tsv"), "split": [0.8, 0.2, 0.0]}


def test_vocabulary_from_train_applied_to_test(tmp_path):
    train = [f"{('a', 'c')[i % 2]}\tsome words {i}" for i in range(40)]
    test = ["a\tfine", "b\tonly in test", "c\tfine too", "\tno label", "zz\tunknown"]
    opts = _vocab_files(tmp_path, train, test)
    idx = _prepare(tmp_path, opts, prepare={"max_reject_fraction": 0.9})
    assert idx["test"]["labels"]["label"]["classes"] == ["a", "c"]
    assert _labels(tmp_path, "test") == [0, 1]                      # 'c' keeps index 1: nothing shifted by 'b'
    rejects = {r["sample_id"]: r for r in _rejects(tmp_path, "test")}
    assert {k: r["reason"] for k, r in rejects.items()} == {1: "unknown_label", 3: "empty_label", 4: "unknown_label"}
    assert rejects[1]["detail"].startswith("te.tsv:2: label 'b' is not one of the 2 classes from the training split")
    assert idx["test"]["rejects"]["reasons"] == {"unknown_label": 2, "empty_label": 1}
    assert _rejects(tmp_path, "train") == [] and idx["train"]["rejects"]["count"] == 0


def test_classes_option_fixes_order_and_rejects_others(tmp_path):
    train = [f"{('a', 'c', 'x')[i % 3]}\tsome words {i}" for i in range(45)]
    opts = dict(_vocab_files(tmp_path, train, ["c\tone", "a\ttwo"]), classes=["c", "a"])
    idx = _prepare(tmp_path, opts, prepare={"max_reject_fraction": 0.5})
    assert idx["train"]["labels"]["label"]["classes"] == ["c", "a"]
    assert idx["train"]["labels"]["label"]["classes_from"] == "option"
    assert _labels(tmp_path, "test") == [0, 1]
    reasons = {r["reason"] for s in ("train", "val") for r in _rejects(tmp_path, s)}
    assert reasons == {"unknown_label"} and sum(idx[s]["rejects"]["count"] for s in ("train", "val")) == 15


def test_reader_rejects_are_counted_on_their_split(tmp_path):
    data = [f"{lab}\t{t}" for lab, t in _sentences(200)]
    data[5] = "pos\t   "                                            # empty text in the labelled file
    (tmp_path / "tr.tsv").write_text("\n".join(data) + "\n")
    (tmp_path / "te.tsv").write_bytes(b"pos\tgood\nneg\tcaf\xe9\nneg\n")  # bad UTF-8, wrong field count
    opts = {"path": str(tmp_path / "tr.tsv"), "test_path": str(tmp_path / "te.tsv"), "split": [0.9, 0.1, 0.0]}
    idx = _prepare(tmp_path, opts, prepare={"max_reject_fraction": 0.7})
    assert idx["test"]["rejects"]["reasons"] == {"invalid_utf8": 1, "field_count": 1} and idx["test"]["rows"] == 1
    where = [s for s in ("train", "val") if idx[s]["rejects"]["count"]]
    assert len(where) == 1 and idx[where[0]]["rejects"]["reasons"] == {"empty_text": 1}
    assert _rejects(tmp_path, where[0])[0]["detail"] == "tr.tsv:6: empty text"
    assert idx["train"]["rows"] + idx["val"]["rows"] == 199


def test_options_checked_at_load(tmp_path):
    with pytest.raises(ShardtrainError, match="config key 'dataset.options.path': the labelled text file is required"):
        from_dict({"dataset": {"name": "text", "options": {}}})
    with pytest.raises(ShardtrainError, match="did you mean 'dataset.options.text'"):
        from_dict({"dataset": {"name": "text", "options": {"path": "a.tsv", "text_col": 1}}})
    with pytest.raises(ShardtrainError, match="config key 'dataset.options.split'"):
        from_dict({"dataset": {"name": "text", "options": {"path": "a.tsv", "split": [0.5, 0.5, 0.5]}}})
    with pytest.raises(ShardtrainError, match="nothere.tsv: text file not found"):
        _prepare(tmp_path, {"path": str(tmp_path / "nothere.tsv")})
    assert not (tmp_path / "out").exists()


def test_recipe_is_the_default_and_user_values_win():
    cfg = from_dict({"dataset": {"name": "text", "options": {"path": "a.tsv"}}, "train": {"lr": 0.5}})
    assert cfg.train.lr == 0.5 and cfg.model.hidden == tuple(Text.recipe["model"]["hidden"])
    assert cfg.data.batch_size == Text.recipe["data"]["batch_size"]
    assert from_dict(to_dict(cfg)) == cfg
    image = from_dict({"dataset": {"name": "fashion-mnist"}})
    assert image.data.batch_size != Text.recipe["data"]["batch_size"] or image.model.hidden != cfg.model.hidden


def test_sms_spam_preset_and_old_config_form():
    preset = load_config("sms-spam")
    assert isinstance(preset.dataset, SmsSpam) and isinstance(preset.dataset, Text)
    assert preset.dataset.options.classes == ("ham", "spam") and preset.augment.copies == 4
    old = from_dict({"dataset": {"name": "sms-spam", "options": {"split": [0.7, 0.1, 0.2]}},
                     "prepare": {"rows_per_shard": 2000, "text": {"bits": 16, "word_ngrams": [1, 2],
                                                                  "char_ngrams": [3, 5]}},
                     "model": {"kind": "mlp", "embed_dim": 64, "hidden": [256]}})
    assert (old.dataset.options.label, old.dataset.options.text, old.dataset.options.header) == (0, 1, False)
    assert old.prepare.text.bits == 16 and old.model.hidden == (256,)
    assert from_dict(to_dict(old)) == old


@pytest.mark.dataset("sms-spam")
def test_sms_spam_kind_reads_the_collection(tmp_path, data_dir):
    raw = {"dataset": {"name": "sms-spam"}, "prepare": {"text": {"bits": 12}}}
    idx = run(raw, "prepare", tmp_path / "out", data_dir=str(data_dir))["prepare"]
    counts = idx["train"]["extra"]["split_counts"]
    assert sum(i["rows"] for i in idx.values()) == 5574 and all(i["rejects"]["count"] == 0 for i in idx.values())
    for cls, total in (("ham", 4827), ("spam", 747)):                  # stratified 0.7 / 0.1 / 0.2
        assert sum(counts[s][cls] for s in counts) == total
        for split, share in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
            assert abs(counts[split][cls] - share * total) <= 1
    assert idx["train"]["dataset"] == "sms-spam"
    assert idx["test"]["labels"]["label"]["classes"] == ["ham", "spam"]


def test_predict_own_test_file_reproduces_test_accuracy(tmp_path):
    from shardtrain.predict import predict

    data = _sentences(160, seed=3)
    (tmp_path / "tr.tsv").write_text("".join(f"{lab}\t{t}\n" for lab, t in data[:120]))
    (tmp_path / "te.tsv").write_text("".join(f"{lab}\t{t}\n" for lab, t in data[120:]))
    raw = {"dataset": {"name": "text", "options": {"path": "tr.tsv", "test_path": "te.tsv", "split": [0.8, 0.2, 0.0]}},
           "prepare": {"text": {"bits": 12}}, "train": {"max_epochs": 2, "accelerator": "cpu", "cpu_threads": 1}}
    result = run(raw, "all", tmp_path / "out", data_dir=str(tmp_path))
    run_dir = result["train"].run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    got = predict(run_dir, tmp_path / "te.tsv", tmp_path / "p.parquet")
    assert got.rows == 40 and got.rejects == 0
    assert got.metrics["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    (tmp_path / "new.txt").write_text("good great film\nbad awful day\n")      # bare lines: no labels
    bare = predict(run_dir, tmp_path / "new.txt", tmp_path / "q.parquet")
    assert bare.rows == 2 and bare.metrics == {}


def _oewn_glosses(data_dir: Path, path: Path, per_class: int = 500) -> None:
    """A 6-class short-sentence task from Open English WordNet: a noun gloss -> its lexicographer file."""
    import csv
    import gzip

    wanted = ("noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.person", "noun.body")
    with gzip.open(data_dir / "oewn-2025" / "oewn-2025-synsets.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r["lexfile"] in wanted]
    rng = np.random.default_rng(0)
    picked = []
    for lexfile in wanted:
        mine = [r for r in rows if r["lexfile"] == lexfile]
        picked += [(lexfile.split(".")[1], mine[i]["definition"]) for i in rng.permutation(len(mine))[:per_class]]
    path.write_text("".join(f"{lab}\t{gloss}\n" for lab, gloss in picked), encoding="utf-8")


@pytest.mark.dataset("oewn-2025")
def test_default_recipe_reaches_a_tfidf_logistic_regression(tmp_path, data_dir):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_union

    path = tmp_path / "glosses.tsv"
    _oewn_glosses(data_dir, path)
    # 3,000 glosses, the kind's default 0.8/0.1/0.1 split: 2,400 to train on, 300 to test.
    raw = {"dataset": {"name": "text", "options": {"path": str(path)}},
           "train": {"accelerator": "cpu"}}                           # everything else: the kind's recipe
    result = run(raw, "all", tmp_path / "out")
    texts = {i: line.split("\t", 1)[1] for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())}

    def split(name: str) -> tuple[list[str], list[int]]:
        ss = ShardSet(tmp_path / "out" / "shards" / "prepare" / name)
        ids = [int(v) for part in ss.column("sample_id") for v in part]
        return [texts[i] for i in ids], _labels(tmp_path, name)

    (x_train, y_train), (x_test, y_test) = split("train"), split("test")
    vec = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                     TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    lr = LogisticRegression(C=10, max_iter=2000).fit(vec.fit_transform(x_train), y_train)
    baseline = float((lr.predict(vec.transform(x_test)) == np.array(y_test)).mean())
    ours = result["evaluate"]["test"]["accuracy"]
    print(f"default text recipe {ours:.4f}, TF-IDF logistic regression {baseline:.4f}")
    assert ours >= baseline - 0.02, f"default text recipe {ours:.3f} vs TF-IDF logistic regression {baseline:.3f}"

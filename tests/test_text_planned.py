"""The ``text`` kind planned by the driver, read by the tasks: the same splits as the previous release's
whole-file reader (398ef27), on every block size, on both executors, from a path or an s3:// URI."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from shardtrain.api import run
from shardtrain.config import from_dict
from shardtrain.readers.text import TextOptions, read_file
from shardtrain.shards import format as fmt
from tests.conftest import REPO
from tests.s3server import moto_endpoint, s3  # noqa: F401, F811  (pytest fixtures)

OLD = "398ef27"  # the last release whose driver read the text files whole
LABELS = ["apple", "banana", "cherry", "date"]
WORDS = ["red", "green", "sweet", "sour", "tree", "seed", "juice", "pie", "skin", "ripe", "café", "naïve"]


def _old_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """The old reader and stage modules, compiled from git (the stage importing the old reader)."""
    mods = []
    for name, path, swap in (("_old_text_reader", "pipelines/readers/text.py", None),
                             ("_old_text_stage", "pipelines/stages/text.py",
                              ("from shardtrain.readers.text import", "from _old_text_reader import"))):
        src = subprocess.run(["git", "show", f"{OLD}:{path}"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
        if swap:
            src = src.replace(*swap)
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        exec(compile(src, f"{OLD}:{path}", "exec"), mod.__dict__)
        mods.append(mod)
    return mods[0], mods[1]


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, int(rng.integers(2, 7)))) for _ in range(n)]


def _headed_tsv(tmp_path: Path) -> Path:
    """A TSV with a header (after a BOM), CRLF on some lines, a tab inside a text, 4 labels, and one
    reject of each kind the delimited reader has, plus an empty label (an ``empty_label`` reject)."""
    rng = np.random.default_rng(1)
    lines = [b"\xef\xbb\xbfid\tlabel\ttext"]
    for i, text in enumerate(_texts(rng, 360)):
        label = LABELS[int(rng.integers(0, 4 if i % 7 else 2))]
        lines.append(f"{i}\t{label}\t{text}{chr(9) + 'tail' if i == 11 else ''}".encode()
                     + (b"\r" if i % 5 == 0 else b""))
    lines[40] = b"39\tapple\tcaf\xe9 au lait"                  # invalid_utf8
    lines[90] = b""                                             # empty_line
    lines[130] = b"129\tbanana"                                 # field_count
    lines[200] = b"199\tcherry\t   "                            # empty_text
    lines[250] = b"249\t\tno label here"                        # empty_label (vocabulary)
    path = tmp_path / "fruit.tsv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _jsonl_and_csv(tmp_path: Path) -> tuple[Path, Path]:
    """JSON Lines with every JSON reject kind (no final newline), and a quoted CSV test file with a header,
    a bad quote, an unknown label and a numeric label written as 2.0 in the JSON."""
    rng = np.random.default_rng(2)
    rows = [json.dumps({"text": t, "label": LABELS[i % 3] if i % 11 else 2.0}) for i, t in enumerate(_texts(rng, 300))]
    rows[5] = "{not json"
    rows[17] = "[1, 2]"
    rows[33] = json.dumps({"label": "apple"})
    rows[48] = json.dumps({"text": 5, "label": "apple"})
    rows[60] = json.dumps({"text": "x", "label": ["apple"]})
    rows[77] = json.dumps({"text": "  ", "label": "banana"})
    main = tmp_path / "fruit.jsonl"
    main.write_text("\n".join(rows), encoding="utf-8")
    test_lines = ["label,text"] + [f'{LABELS[i % 3]},"{t}, and more"' for i, t in enumerate(_texts(rng, 40))]
    test_lines[7] = 'apple,"unterminated'
    test_lines[9] = "kiwi,not a class of the training split"
    test = tmp_path / "fruit_test.csv"
    test.write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    return main, test


CASES = {
    "tsv": lambda d: {"path": str(_headed_tsv(d)), "header": True, "split": [0.6, 0.2, 0.2]},
    "jsonl": lambda d: (lambda m, t: {"path": str(m), "test_path": str(t), "sep": ",", "header": True,
                                      "split": [0.75, 0.25, 0.0]})(*_jsonl_and_csv(d)),
}


def _config(options: dict, block_bytes: int = 32 << 20, rows_per_shard: int = 10000, name: str = "text"):
    return from_dict({"dataset": {"name": name, "options": options},
                      "prepare": {"block_bytes": block_bytes, "rows_per_shard": rows_per_shard,
                                  "text": {"bits": 12}}})


def _planned(cfg, executor: str = "local") -> dict:
    """The planned splits as the shard tasks see them: every split's rows, loaded from its Parts."""
    jobs = cfg.dataset.prepare_jobs(cfg, cfg.dataset.plan(cfg), executor)
    out = {}
    for job in jobs:
        cols = job.source.read(0, job.source.rows())
        out[job.split] = {"sample_id": cols["sample_id"].tolist(), "text": list(cols["text"]),
                          "label": cols["label"].tolist(), "rejects": job.pre_rejects,
                          "extra": job.describe["extra"], "labels": job.describe["labels"],
                          "idf": job.ctx["idf"], "dtypes": {k: str(np.asarray(v).dtype) for k, v in cols.items()}}
    return out


def _previous(cfg) -> dict:
    """The same splits from the previous release's code: the files read whole, split in memory."""
    from shardtrain.features.text import fit_idf

    reader, stage = _old_modules()
    opts = reader.TextOptions(**{k: getattr(cfg.dataset.options, k) for k in
                                 ("path", "val_path", "test_path", "format", "sep", "header", "quoting",
                                  "text", "label", "classes", "split")})
    files = {s: cfg.dataset._path(getattr(opts, key)) for s, key in
             (("train", "path"), ("val", "val_path"), ("test", "test_path")) if getattr(opts, key)}
    rows = {s: reader.read_file(Path(p), opts.layout(Path(p))) for s, p in files.items()}
    splits = stage.build_splits(rows, opts.split, cfg.seed, opts.classes)
    idf = fit_idf(list(splits.sources["train"]["text"]), cfg.prepare.text)
    return {s: {"sample_id": src["sample_id"].tolist(), "text": list(src["text"]), "label": src["label"].tolist(),
                "rejects": splits.rejects[s], "extra": splits.extra, "classes": list(splits.vocab.classes),
                "idf": idf, "dtypes": {k: str(np.asarray(v).dtype) for k, v in src.items()}}
            for s, src in splits.sources.items()}


def _same_as_previous(new: dict, old: dict) -> None:
    assert list(new) == list(old)
    for split in old:
        a, b = new[split], old[split]
        for key in ("sample_id", "text", "label", "rejects", "extra", "dtypes"):
            assert a[key] == b[key], (split, key)
        assert a["labels"]["label"]["classes"] == b["classes"]
        assert a["idf"].dtype == b["idf"].dtype and np.allclose(a["idf"], b["idf"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_planned_splits_equal_the_previous_release_on_every_block_size(tmp_path, case):
    options = CASES[case](tmp_path)
    old = _previous(_config(options))
    reasons = {r["reason"] for s in old.values() for r in s["rejects"]}
    expected = ({"invalid_utf8", "empty_line", "field_count", "empty_text", "empty_label"} if case == "tsv" else
                {"bad_json", "missing_field", "empty_text", "bad_quoting", "unknown_label"})
    assert reasons == expected and len(old["train"]["extra"]["split_counts"]["train"]) >= 3
    for block_bytes in (1, 97, 1000, 32 << 20):                 # 1 byte: a block per line
        _same_as_previous(_planned(_config(options, block_bytes, rows_per_shard=37)), old)


def _shard_bytes(root: Path) -> dict[str, bytes]:
    """Every shard and rejects file of a prepare output, by relative path (the indexes differ only in the
    fingerprint, which holds the config's block size; their content is compared apart)."""
    base = root / "shards" / "prepare"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.name != fmt.INDEX_NAME}


def _index_content(index: dict) -> dict:
    return {k: index[k] for k in ("rows", "labels", "features", "transform", "extra") if k in index} | {
        "rejects": index["rejects"]["count"]}


def test_shards_identical_between_executors_and_block_sizes(tmp_path, ray_local):
    options = CASES["tsv"](tmp_path)
    runs = {}
    for name, executor, block_bytes in (("local-big", "local", 32 << 20), ("local-small", "local", 211),
                                        ("ray-small", "ray", 503), ("ray-big", "ray", 32 << 20)):
        raw = {"dataset": {"name": "text", "options": options},
               "prepare": {"block_bytes": block_bytes, "rows_per_shard": 40, "text": {"bits": 12},
                           "max_reject_fraction": 0.2}}
        idx = run(raw, "prepare", tmp_path / name, executor=executor)["prepare"]
        runs[name] = (_shard_bytes(tmp_path / name), {s: _index_content(i) for s, i in idx.items()})
    first_files, first_index = runs["local-big"]
    assert len([k for k in first_files if k.startswith("train/")]) >= 3   # several shards, some from 2 pieces
    assert any(k.endswith(fmt.REJECTS_NAME) for k in first_files)
    for name, (files, index) in runs.items():
        assert files == first_files, name
        assert index == first_index, name


def test_s3_input_gives_the_local_input_shards(s3, tmp_path):  # noqa: F811  (the fixture)
    options = CASES["jsonl"](tmp_path)
    for key in ("path", "test_path"):
        local = Path(options[key])
        s3.put(f"in/{local.name}", local.read_bytes())
    remote = dict(options, path=s3.uri("in/fruit.jsonl"), test_path=s3.uri("in/fruit_test.csv"))
    prepare = {"block_bytes": 700, "rows_per_shard": 50, "text": {"bits": 12}, "max_reject_fraction": 0.2}
    a = run({"dataset": {"name": "text", "options": options}, "prepare": prepare}, "prepare", tmp_path / "a")
    b = run({"dataset": {"name": "text", "options": remote}, "prepare": prepare}, "prepare", tmp_path / "b")
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")
    assert {s: _index_content(i) for s, i in a["prepare"].items()} == \
        {s: _index_content(i) for s, i in b["prepare"].items()}
    # predict's reader takes the URI too (read whole, in this process)
    opts = TextOptions(path=remote["path"])
    got = read_file(remote["path"], opts.layout(remote["path"]))
    want = read_file(Path(options["path"]), opts.layout(Path(options["path"])))
    assert {k: v.tolist() for k, v in got.columns.items()} == {k: v.tolist() for k, v in want.columns.items()}
    assert s3.bucket not in json.dumps(a["prepare"]["train"]["extra"])


def test_augment_reads_the_planned_training_split(tmp_path):
    options = CASES["tsv"](tmp_path)
    raw = {"dataset": {"name": "text", "options": options},
           "prepare": {"block_bytes": 300, "rows_per_shard": 64, "text": {"bits": 10}, "max_reject_fraction": 0.2},
           "augment": {"copies": 1, "text": {"synonyms": None}}}  # no OEWN: runs without the real data
    run(raw, "prepare", tmp_path / "out")
    out = run(raw, "augment", tmp_path / "out")
    cfg = _config(options, 300, 64)
    train = _previous(cfg)["train"]
    aug = out["augment"]["train"]
    assert aug["rows"] == 2 * len(train["sample_id"])
    from shardtrain.shards import ShardSet

    ids = [int(v) for part in ShardSet(tmp_path / "out" / "shards" / "augment" / "train").column("source_id")
           for v in part]
    assert ids == [i for i in train["sample_id"] for _ in range(2)]      # each original, then its copy


@pytest.mark.dataset("sms-spam")
def test_sms_spam_planned_equals_previous_release(data_dir):
    cfg = from_dict({"dataset": {"name": "sms-spam", "data_dir": str(data_dir)},
                     "prepare": {"block_bytes": 100_000, "rows_per_shard": 1000}})
    old = _previous(cfg)
    assert sum(len(s["sample_id"]) for s in old.values()) == 5574
    _same_as_previous(_planned(cfg), old)


def test_compressed_file_is_one_block_with_the_same_rows(tmp_path):
    import gzip

    options = CASES["tsv"](tmp_path)
    packed = tmp_path / "fruit.tsv.gz"
    packed.write_bytes(gzip.compress(Path(options["path"]).read_bytes()))
    plain = _planned(_config(options, 500, rows_per_shard=37))
    gz = _planned(_config(dict(options, path=str(packed)), 500, rows_per_shard=37))
    for split in plain:
        for key in ("sample_id", "text", "label"):
            assert gz[split][key] == plain[split][key], (split, key)
        assert [dict(r, detail=r["detail"].replace("fruit.tsv.gz:", "fruit.tsv:")) for r in gz[split]["rejects"]] \
            == plain[split]["rejects"]
        assert np.array_equal(gz[split]["idf"], plain[split]["idf"])

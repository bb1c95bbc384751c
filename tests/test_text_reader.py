"""Text reader: the real SMS Spam Collection, per-line rejects with file:line, layouts, file errors, stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.readers.text import SPLITS, TextOptions, read_file, strata, stratified_split

try:
    from tests.conftest import DATA_DIR, dataset_dir
except ImportError:
    DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def _read(path: Path, **options):
    opts = TextOptions(path=str(path), **options)
    return read_file(path, opts.layout(path))


@pytest.fixture(scope="module")
def sms():
    return _read(dataset_dir("sms-spam") / "sms-spam" / "SMSSpamCollection")


def test_sms_counts(sms):
    cols = sms.columns
    assert len(cols["text"]) == 5574 and sms.ok.all() and sms.has_labels
    assert sorted(set(cols["label"].tolist())) == ["ham", "spam"]
    assert (cols["label"] == "spam").sum() == 747
    assert cols["sample_id"].dtype == np.int64 and cols["sample_id"].tolist() == list(range(5574))
    assert cols["line"].tolist() == list(range(1, 5575)) and cols["text"].dtype == object
    assert cols["text"][0].startswith("Go until jurong point")
    assert all(isinstance(t, str) and t for t in cols["text"])


def test_sms_split_is_stratified(sms):
    label = strata(sms)
    split = stratified_split(label, (0.7, 0.1, 0.2), seed=0)
    assert split.dtype == np.int8 and set(np.unique(split).tolist()) == {0, 1, 2}
    for k, n in ((0, 4827), (1, 747)):
        share = np.bincount(split[label == k], minlength=3) / n
        np.testing.assert_allclose(share, [0.7, 0.1, 0.2], atol=1.0 / n)


def test_split_is_pure_function_of_seed_and_labels():
    labels = np.array([0, 1, 1, 0, 2, 2, 2, 0, -1, 1] * 20)
    a = stratified_split(labels, (0.6, 0.2, 0.2), seed=5)
    assert np.array_equal(a, stratified_split(labels.copy(), (0.6, 0.2, 0.2), seed=5))
    assert not np.array_equal(a, stratified_split(labels, (0.6, 0.2, 0.2), seed=6))
    assert (a[labels == -1] == -1).all() and (a[labels >= 0] >= 0).all()


def _write(tmp_path: Path, data: bytes, name: str = "t.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_lines_become_rejects(tmp_path):
    data = (b"ham\thello there\n"
            b"spam\t\n"                      # line 2: empty text
            b"ham\tcaf\xe9 latte\n"           # line 3: latin-1 byte, not UTF-8
            b"eggs\twhat label\n"             # line 4: any label is read; the vocabulary decides later
            b"\tno label here\n"              # line 5: an empty label cell, kept as ''
            b"just one field\n"               # line 6: wrong field count
            b"\n"                             # line 7: empty line
            b"spam\tWIN a prize\twith\ttabs\r\n")
    rows = _read(_write(tmp_path, data))
    cols = rows.columns
    assert cols["reject_reason"].tolist() == ["", "empty_text", "invalid_utf8", "", "", "field_count", "empty_line", ""]
    assert cols["reject_detail"][1] == "t.tsv:2: empty text"
    assert cols["reject_detail"][2] == "t.tsv:3: not valid UTF-8 (byte 7)"
    assert cols["reject_detail"][5] == "t.tsv:6: expected 2 fields separated by '\\t', got 1: 'just one field'"
    assert cols["text"][7] == "WIN a prize\twith\ttabs"       # text is the last column
    assert cols["label"].tolist()[:5] == ["ham", "spam", "", "eggs", ""]
    assert strata(rows).tolist() == [1, 3, 3, 0, 3, 3, 3, 2]    # eggs, ham, spam, then rejects and empty labels


def test_header_and_named_columns(tmp_path):
    data = b"id,message,category\n1,\"hi, you\",ok\n2,buy now,bad\n3,see you,ok\n"
    rows = _read(_write(tmp_path, data, "t.csv"), sep=",", header=True, text="message", label="category")
    assert rows.columns["label"].tolist() == ["ok", "bad", "ok"]               # quoting is on for ','
    assert rows.columns["text"][0] == "hi, you" and rows.columns["sample_id"].tolist() == [0, 1, 2]
    assert rows.columns["line"].tolist() == [2, 3, 4]


def test_json_lines_layout(tmp_path):
    data = b'{"text": "a b", "label": 3}\n{"text": "c", "label": null}\n[1]\n{"text": 5}\n'
    rows = _read(_write(tmp_path, data, "t.jsonl"))
    assert rows.columns["label"].tolist()[:2] == ["3", ""]
    assert rows.columns["reject_reason"].tolist() == ["", "", "bad_json", "bad_json"]
    assert rows.columns["reject_detail"][3] == "t.jsonl:4: 'text' is int, expected a string"
    with pytest.raises(ShardtrainError, match="JSON Lines, whose fields are named"):
        _read(tmp_path / "t.jsonl", text=0)


def test_predict_reads_bare_lines_without_labels(tmp_path):
    path = _write(tmp_path, b"first message\nsecond one\n")
    opts = TextOptions(path=str(path))
    rows = read_file(path, opts.layout(path), labels=False)
    assert not rows.has_labels and rows.columns["text"].tolist() == ["first message", "second one"]


def test_file_level_errors(tmp_path):
    with pytest.raises(ShardtrainError, match="nothere.tsv: text data file not found"):
        _read(tmp_path / "nothere.tsv")
    wrong_sep = _write(tmp_path, b"ham,hello\nspam,win\n")
    with pytest.raises(ShardtrainError) as err:
        _read(wrong_sep)
    assert str(wrong_sep) in str(err.value) and "no line has 2 fields" in str(err.value)
    headed = _write(tmp_path, b"label\tbody\nham\thi\n", "h.tsv")
    with pytest.raises(ShardtrainError, match="header has no column 'text'"):
        _read(headed, header=True)
    with pytest.raises(ShardtrainError, match="split fractions"):
        TextOptions(path=str(headed), split=(0.5, 0.5, 0.5))
    with pytest.raises(ShardtrainError, match="no data rows"):
        _read(_write(tmp_path, b"", "e.tsv"))


def test_splits_constant():
    assert SPLITS == ("train", "val", "test")

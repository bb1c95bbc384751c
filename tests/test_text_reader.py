"""Delimited text reader: the real SMS Spam Collection, rejects, file errors, stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.readers.text import SPLITS, TextReaderOptions, read_text, stratified_split

try:
    from tests.conftest import DATA_DIR, dataset_dir
except ImportError:
    DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def sms():
    return read_text(TextReaderOptions(), data_dir=dataset_dir("sms-spam"), seed=0)


def test_sms_counts(sms):
    cols = sms.columns
    assert sms.classes == ("ham", "spam")
    assert len(cols["text"]) == 5574 and sms.rejected == 0
    assert np.bincount(cols["label"]).tolist() == [4827, 747]
    assert cols["sample_id"].dtype == np.int64 and cols["sample_id"].tolist() == list(range(5574))
    assert cols["label"].dtype == np.int64 and cols["text"].dtype == object
    assert cols["text"][0].startswith("Go until jurong point")
    assert all(isinstance(t, str) and t for t in cols["text"])


def test_sms_split_is_stratified(sms):
    split, label = sms.columns["split"], sms.columns["label"]
    assert split.dtype == np.int8 and set(np.unique(split).tolist()) == {0, 1, 2}
    for k, n in ((0, 4827), (1, 747)):
        share = np.bincount(split[label == k], minlength=3) / n
        np.testing.assert_allclose(share, [0.7, 0.1, 0.2], atol=1.0 / n)
    assert sms.split_counts["test"]["spam"] == int(((split == 2) & (label == 1)).sum())
    assert sum(sum(c.values()) for c in sms.split_counts.values()) == 5574


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
            b"eggs\twhat label\n"             # line 4: unknown label
            b"\tno label here\n"              # line 5: missing label
            b"just one field\n"               # line 6: wrong column count
            b"\n"                             # line 7: empty line
            b"spam\tWIN a prize\twith\ttabs\r\n")
    table = read_text(TextReaderOptions(path=str(_write(tmp_path, data))), seed=0)
    reasons = table.columns["reject_reason"].tolist()
    assert reasons[0] == "" and reasons[7] == ""
    assert reasons[1] == "line 2: empty text"
    assert reasons[2].startswith("line 3: not valid UTF-8")
    assert reasons[3].startswith("line 4: unknown label 'eggs'")
    assert reasons[4] == "line 5: missing label"
    assert reasons[5] == "line 6: expected 2 fields, got 1"
    assert reasons[6] == "line 7: empty line"
    assert table.columns["text"][7] == "WIN a prize\twith\ttabs"       # text is the last column
    assert table.columns["label"].tolist() == [0, -1, -1, -1, -1, -1, -1, 1]
    assert (table.columns["split"][1:7] == -1).all() and table.rejected == 6


def test_header_and_named_columns(tmp_path):
    data = b"id,message,category\n1,\"hi, you\",ok\n2,buy now,bad\n3,see you,ok\n"
    opts = TextReaderOptions(path=str(_write(tmp_path, data, "t.csv")), sep=",", header=True,
                             text_col="message", label_col="category", classes=None, quoting=True)
    table = read_text(opts, seed=1)
    assert table.classes == ("bad", "ok") and table.columns["label"].tolist() == [1, 0, 1]
    assert table.columns["text"][0] == "hi, you" and table.columns["sample_id"].tolist() == [0, 1, 2]


def test_file_level_errors(tmp_path):
    with pytest.raises(ShardtrainError, match="nothere.tsv: text data file not found"):
        read_text(TextReaderOptions(path=str(tmp_path / "nothere.tsv")))
    wrong_sep = _write(tmp_path, b"ham,hello\nspam,win\n")
    with pytest.raises(ShardtrainError) as err:
        read_text(TextReaderOptions(path=str(wrong_sep)))
    assert str(wrong_sep) in str(err.value) and "no line has 2 fields" in str(err.value)
    headed = _write(tmp_path, b"label\tbody\nham\thi\n", "h.tsv")
    with pytest.raises(ShardtrainError, match="header has no column 'text'"):
        read_text(TextReaderOptions(path=str(headed), header=True, text_col="text", label_col="label"))
    with pytest.raises(ShardtrainError, match="split fractions"):
        read_text(TextReaderOptions(path=str(headed), split=(0.5, 0.5, 0.5)))
    with pytest.raises(ShardtrainError, match="no data rows"):
        read_text(TextReaderOptions(path=str(_write(tmp_path, b"", "e.tsv"))))


def test_splits_constant():
    assert SPLITS == ("train", "val", "test")

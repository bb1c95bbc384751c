"""Hashed n-gram features: pinned hash values, a naive oracle, sparse column layout, stability."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shardtrain.core.errors import ShardtrainError
from shardtrain.features.text import (NS_CHAR, TextFeatureConfig, hashed_ngrams, token_hash,
                                     word_ngram_hash)

REPO = Path(__file__).resolve().parents[1]
try:
    from tests.conftest import DATA_DIR, dataset_dir
except ImportError:
    DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
SMS = DATA_DIR / "sms-spam" / "SMSSpamCollection"


@pytest.fixture(scope="module")
def sms_texts() -> list[str]:
    dataset_dir("sms-spam")  # skips naming the dataset when it is absent
    return [line.split("\t", 1)[1] for line in SMS.read_text(encoding="utf-8").splitlines()[:400]]


def naive_features(text: str, cfg: TextFeatureConfig) -> tuple[list[int], np.ndarray]:
    """Per-token loop oracle of the documented tokenisation, hash and weighting."""
    text = text.lower()
    tokens = re.findall(r"\w+|[^\w\s]", text)
    hashes = [word_ngram_hash(tokens[i:i + n]) for n in range(cfg.word_ngrams[0], cfg.word_ngrams[1] + 1)
              for i in range(len(tokens) - n + 1)]
    lo, hi = cfg.char_ngrams
    for word in text.split():
        padded = f" {word} "
        if len(padded) < lo:
            hashes.append(token_hash(padded, NS_CHAR))
        hashes += [token_hash(padded[i:i + n], NS_CHAR) for n in range(lo, hi + 1)
                   for i in range(len(padded) - n + 1)]
    counts = collections.Counter(h & ((1 << cfg.bits) - 1) for h in hashes)
    ids = sorted(counts)
    w = np.log1p([counts[i] for i in ids])
    return ids, w / np.sqrt((w * w).sum()) if len(w) else w


def test_pinned_hash_values():
    assert token_hash("free") == 0x98718F60AB9DF8CD
    assert token_hash("free") & 0xFFFF == 63693
    assert token_hash(" fr", NS_CHAR) & 0xFFFF == 10040
    assert word_ngram_hash(["free", "entry"]) & 0xFFFF == 20891
    out = hashed_ngrams({"sample_id": np.array([7]), "text": np.array(["FREE"], dtype=object)},
                        TextFeatureConfig(char_ngrams=None))
    assert out["x_ids"].to_pylist() == [[63693]] and out["x_weights"].to_pylist() == [[1.0]]


@pytest.mark.parametrize("cfg", [TextFeatureConfig(bits=12, char_ngrams=(2, 5)),
                                 TextFeatureConfig(bits=10, word_ngrams=(1, 3), char_ngrams=(4, 6))])
def test_matches_naive_oracle(sms_texts, cfg):
    texts = sms_texts + ["", "   ", "£100 Ünïcödé ÀÉ!! tab\there", "a b", "x_y  z\n\nz"]
    out = hashed_ngrams({"sample_id": np.arange(len(texts)), "text": np.array(texts, dtype=object)}, cfg)
    for i, text in enumerate(texts):
        ids, w = naive_features(text, cfg)
        assert out["x_ids"][i].as_py() == ids, text
        np.testing.assert_allclose(out["x_weights"][i].as_py(), w, rtol=1e-6, atol=1e-7)


def test_sparse_columns_well_formed(sms_texts):
    batch = {"sample_id": np.arange(10, 10 + len(sms_texts)), "text": np.array(sms_texts, dtype=object),
             "label": np.zeros(len(sms_texts), dtype=np.int64), "aug_index": np.zeros(len(sms_texts), np.int32)}
    out = hashed_ngrams(batch, TextFeatureConfig())
    ids, w = out["x_ids"], out["x_weights"]
    assert "text" not in out and out["label"] is batch["label"] and out["aug_index"] is batch["aug_index"]
    assert ids.type == pa.list_(pa.int32()) and w.type == pa.list_(pa.float32())
    assert len(ids) == len(sms_texts) and ids.offsets.equals(w.offsets)
    flat = ids.values.to_numpy()
    assert flat.min() >= 0 and flat.max() < 2**16
    offsets = ids.offsets.to_numpy()
    for a, b in zip(offsets[:-1], offsets[1:]):
        assert b > a and np.all(np.diff(flat[a:b]) > 0)             # sorted, unique, non-empty
    norms = np.sqrt(np.add.reduceat(w.values.to_numpy().astype(np.float64) ** 2, offsets[:-1]))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_empty_text_gives_empty_row_and_split_independence(sms_texts):
    texts = np.array(["", *sms_texts[:50]], dtype=object)
    cfg = TextFeatureConfig()
    whole = hashed_ngrams({"sample_id": np.arange(51), "text": texts}, cfg)
    assert whole["x_ids"][0].as_py() == []
    halves = [hashed_ngrams({"sample_id": np.arange(a, b), "text": texts[a:b]}, cfg) for a, b in ((0, 20), (20, 51))]
    assert whole["x_ids"].to_pylist() == halves[0]["x_ids"].to_pylist() + halves[1]["x_ids"].to_pylist()


def test_identical_across_processes():
    code = ("from shardtrain.features.text import hashed_ngrams, TextFeatureConfig; import numpy as np; "
            "o = hashed_ngrams({'sample_id': np.arange(2), 'text': np.array(['Free entry in 2 a wkly comp!', "
            "'Ok lar... Joking wif u oni'], dtype=object)}, TextFeatureConfig()); "
            "print(o['x_ids'].to_pylist())")
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED=seed)
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        outs.add(res.stdout)
    here = hashed_ngrams({"sample_id": np.arange(2), "text": np.array(
        ["Free entry in 2 a wkly comp!", "Ok lar... Joking wif u oni"], dtype=object)}, TextFeatureConfig())
    assert outs == {str(here["x_ids"].to_pylist()) + "\n"}


def test_bad_config_and_batch():
    with pytest.raises(ShardtrainError, match="bits"):
        hashed_ngrams({"sample_id": np.arange(1), "text": np.array(["a"], dtype=object)}, TextFeatureConfig(bits=40))
    with pytest.raises(ShardtrainError, match="no column 'text'"):
        hashed_ngrams({"sample_id": np.arange(1)}, TextFeatureConfig())


def test_word_or_char_family_alone_and_bad_rows():
    batch = {"sample_id": np.arange(2), "text": np.array(["Win now", "ok"], dtype=object)}
    words = hashed_ngrams(batch, TextFeatureConfig(char_ngrams=None))
    assert words["x_ids"].to_pylist()[1] == [token_hash("ok") & 0xFFFF]
    chars = hashed_ngrams(batch, TextFeatureConfig(word_ngrams=None, char_ngrams=(3, 3)))
    assert chars["x_ids"].to_pylist()[1] == sorted({token_hash(" ok", NS_CHAR) & 0xFFFF,
                                                    token_hash("ok ", NS_CHAR) & 0xFFFF})
    with pytest.raises(ShardtrainError, match="row 1 .sample_id 1. is NoneType"):
        hashed_ngrams({"sample_id": np.arange(2), "text": np.array(["a", None], dtype=object)},
                      TextFeatureConfig())


def test_idf_is_fitted_smooth_idf_and_round_trips():
    from shardtrain.features.text import decode_idf, encode_idf, fit_idf, weighted_ngrams

    cfg = TextFeatureConfig(bits=10, char_ngrams=None, word_ngrams=(1, 1), idf=True)
    texts = ["spam spam eggs", "eggs ham", "ham"]
    idf = fit_idf(texts, cfg)
    spam, eggs = token_hash("spam") & 1023, token_hash("eggs") & 1023
    np.testing.assert_allclose([idf[spam], idf[eggs]], [np.log(4 / 2) + 1, np.log(4 / 3) + 1], rtol=1e-6)
    np.testing.assert_array_equal(decode_idf(encode_idf(idf), 10), idf)
    with pytest.raises(ShardtrainError, match="needs 2048"):
        decode_idf(encode_idf(idf), 11)
    out = weighted_ngrams({"sample_id": np.arange(1), "text": np.array(["spam eggs"], dtype=object)},
                          {"cfg": cfg, "idf": idf})
    w = dict(zip(out["x_ids"][0].as_py(), out["x_weights"][0].as_py()))
    assert w[spam] / w[eggs] == pytest.approx(idf[spam] / idf[eggs], rel=1e-5)       # tf 1 each, idf weighted
    with pytest.raises(ShardtrainError, match="no idf weights were fitted"):
        hashed_ngrams({"sample_id": np.arange(1), "text": np.array(["a"], dtype=object)}, cfg)

"""EDA operations, determinism, batch-split independence and the nlpaug wrappers."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shardtrain.augment import eda as eda_module
from shardtrain.augment.text import (AUG_ID_SHIFT, EDA, STOP_WORDS, DictSynonyms, NlpAug, TextAugmentConfig,
                          TextAugmentStage, apply_sr, clean_text, copy_uniforms, draws_needed,
                          random_deletion, random_insertion, random_swap, synonym_replacement)
from shardtrain.core.errors import ShardtrainError

REPO = Path(__file__).resolve().parents[1]
try:
    from tests.conftest import DATA_DIR, dataset_dir
except ImportError:
    DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
SMS = DATA_DIR / "sms-spam" / "SMSSpamCollection"

# 20 distinct non-stop words, each with two single-word synonyms that are not in the sentence.
WORDS = [f"w{chr(97 + i)}ord" for i in range(20)]
SYN = DictSynonyms({w: [f"syn{w}a", f"syn{w}b"] for w in WORDS})


@pytest.fixture(scope="module")
def sms_texts() -> list[str]:
    dataset_dir("sms-spam")  # skips naming the dataset when it is absent
    return [line.split("\t", 1)[1] for line in SMS.read_text(encoding="utf-8").splitlines()[:300]]


def test_import_without_ray_or_nlpaug():
    code = ("import sys; from shardtrain.augment.text import EDA; "
            "assert 'ray' not in sys.modules, 'ray imported'; "
            "assert 'nlpaug' not in sys.modules, 'nlpaug imported'; print('ok')")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_clean_text_follows_reference():
    assert clean_text("Don't WIN £1000-now!!\tCall 0800") == ["dont", "win", "now", "call"]
    assert clean_text("12345 :-)") == []


def test_copy_uniforms_are_per_stream():
    u = copy_uniforms(7, np.array([123, 124, 123]), np.array([4, 4, 5]), np.array([5, 3, 2]))
    assert u.shape == (10,) and u.min() >= 0.0 and u.max() < 1.0
    alone = copy_uniforms(7, 123, 4, [8])                       # same stream, longer prefix
    np.testing.assert_array_equal(u[:5], alone[:5])
    np.testing.assert_array_equal(u[5:8], copy_uniforms(7, 124, 4, [3]))
    assert not np.array_equal(u[8:], alone[:2]) and not np.array_equal(alone, copy_uniforms(8, 123, 4, [8]))
    many = copy_uniforms(0, np.arange(2000), 1, np.full(2000, 50))
    assert abs(many.mean() - 0.5) < 0.01 and abs(np.mean(many < 0.1) - 0.1) < 0.01


def test_eda_copy_uses_its_own_stream():
    eda = EDA(alpha_sr=0.2, alpha_ri=0, alpha_rs=0, p_rd=0, n_aug=3, synonyms=SYN, seed=9)
    copies = eda(" ".join(WORDS), sample_id=42)
    cands = list(WORDS)
    for c, got in enumerate(copies, start=1):
        u = copy_uniforms(9, 42, c, [draws_needed("sr", 20, 4, 20)]).tolist()
        assert got == " ".join(apply_sr(WORDS, 4, eda.synonyms, cands, u))


def test_synonym_replacement_replaces_exactly_n():
    rng = np.random.default_rng(0)
    for n in (1, 3, 7):
        out = synonym_replacement(WORDS, n, SYN, rng)
        changed = [(o, w) for o, w in zip(out, WORDS) if o != w]
        assert len(out) == len(WORDS) and len(changed) == n
        assert all(o in SYN.synonyms(w) for o, w in changed)


def test_stop_words_never_replaced():
    stop = sorted(w for w in STOP_WORDS if w)[:30]
    syn = DictSynonyms({w: ["zzz"] for w in stop + ["car"]})
    words = stop + ["car"]
    rng = np.random.default_rng(1)
    for _ in range(50):
        out = synonym_replacement(words, 5, syn, rng)
        assert out[:-1] == stop and out[-1] == "zzz"          # only the non-stop word moves
        ins = random_insertion(words, 3, syn, rng)
        assert ins.count("zzz") == 3                           # inserted synonyms come from "car"


def test_random_insertion_adds_exactly_n():
    rng = np.random.default_rng(2)
    for n in (1, 2, 5):
        out = random_insertion(WORDS, n, SYN, rng)
        extra = [w for w in out if w not in WORDS]
        assert len(out) == len(WORDS) + n and len(extra) == n
        assert all(w.startswith("syn") for w in extra)
    assert random_insertion(["the", "a"], 2, SYN, rng) == ["the", "a"]  # no candidate: unchanged


def test_random_swap_changes_two_positions_per_swap():
    rng = np.random.default_rng(3)
    single = [sum(a != b for a, b in zip(random_swap(WORDS, 1, rng), WORDS)) for _ in range(200)]
    assert set(single) == {2}
    out = random_swap(WORDS, 3, rng)
    assert sorted(out) == sorted(WORDS)
    changed = np.mean([sum(a != b for a, b in zip(random_swap(WORDS, 3, rng), WORDS)) for _ in range(300)])
    assert 4.5 <= changed <= 6.0                               # ~2n, a little less when swaps overlap
    assert random_swap(["one"], 3, rng) == ["one"]


def test_random_deletion_rate_and_never_empty():
    rng = np.random.default_rng(4)
    kept = [len(random_deletion(WORDS, 0.3, rng)) for _ in range(2000)]
    assert abs(1 - np.mean(kept) / len(WORDS) - 0.3) < 0.02
    for _ in range(200):
        out = random_deletion(["a", "b", "c"], 1.0, rng)       # everything deleted -> one word kept
        assert len(out) == 1 and out[0] in "abc"
    assert random_deletion(["solo"], 1.0, rng) == ["solo"]


def test_eda_counts_follow_alpha():
    eda = EDA(alpha_sr=0.2, alpha_ri=0.0, alpha_rs=0.0, p_rd=0.0, n_aug=5, synonyms=SYN, seed=0)
    for copy in eda(" ".join(WORDS)):
        assert sum(a != b for a, b in zip(copy.split(), WORDS)) == 4   # int(0.2 * 20)
    eda = EDA(alpha_sr=0.0, alpha_ri=0.1, alpha_rs=0.0, p_rd=0.0, n_aug=3, synonyms=SYN, seed=0)
    assert all(len(c.split()) == 22 for c in eda(" ".join(WORDS)))


def test_eda_same_seed_same_output_different_seed_differs(sms_texts):
    a = EDA(synonyms=SYN, seed=1)(sms_texts)
    b = EDA(synonyms=SYN, seed=1)(sms_texts)
    c = EDA(synonyms=SYN, seed=2)(sms_texts)
    assert a == b and a != c
    assert all(len(row) == 9 for row in a)
    assert all(s for row in a for s in row)                      # never an empty string


def test_eda_without_synonyms_logs_once_and_uses_swap_and_delete(caplog, monkeypatch):
    monkeypatch.setattr(eda_module, "_warned_no_synonyms", False)
    with caplog.at_level(logging.WARNING, logger="shardtrain.augment.eda"):
        first, second = EDA(seed=0), EDA(seed=1)
    assert len([r for r in caplog.records if "no synonym source" in r.message]) == 1
    assert first.ops == ("rs", "rd") and second.ops == ("rs", "rd")
    words = clean_text("win a brand new phone today by calling our hotline")
    for copy in first("win a brand new phone today by calling our hotline"):
        assert set(copy.split()) <= set(words)


def test_eda_text_without_letters_is_kept():
    assert EDA(synonyms=SYN, n_aug=3)("12345 :-)") == ["12345 :-)"] * 3


def _batch(texts: list[str], ids: np.ndarray) -> dict:
    return {"sample_id": ids, "text": np.array(texts, dtype=object),
            "label": (ids % 2).astype(np.int64)}


def test_batch_independent_of_split_and_order(sms_texts):
    eda = EDA(synonyms=SYN, n_aug=4, seed=3)
    ids = np.arange(100, 100 + len(sms_texts), dtype=np.int64)
    whole = eda.augment_batch(_batch(sms_texts, ids))
    parts = [eda.augment_batch(_batch(sms_texts[a:b], ids[a:b])) for a, b in ((0, 37), (37, 300))]
    for col in ("sample_id", "text", "label", "source_id", "aug_index"):
        np.testing.assert_array_equal(whole[col], np.concatenate([p[col] for p in parts]))
    rev = eda.augment_batch(_batch(sms_texts[::-1], ids[::-1]))
    by_id = dict(zip(rev["sample_id"].tolist(), rev["text"].tolist()))
    assert [by_id[s] for s in whole["sample_id"].tolist()] == whole["text"].tolist()


def test_batch_columns(sms_texts):
    eda = EDA(synonyms=SYN, n_aug=2, seed=0)
    out = eda.augment_batch(_batch(sms_texts[:3], np.array([5, 6, 7])))
    assert out["aug_index"].dtype == np.int32 and out["aug_index"].tolist() == [0, 1, 2] * 3
    assert out["source_id"].tolist() == [5, 5, 5, 6, 6, 6, 7, 7, 7]
    assert out["sample_id"].tolist()[:3] == [5, 5 + (1 << AUG_ID_SHIFT), 5 + (2 << AUG_ID_SHIFT)]
    assert out["text"][0] == sms_texts[0] and out["label"].tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 1]
    assert eda.augment_batch(_batch(sms_texts[:2], np.array([1, 2])), include_original=False)[
        "aug_index"].tolist() == [1, 2, 1, 2]
    with pytest.raises(ShardtrainError, match="no column 'text'"):
        eda.augment_batch({"sample_id": np.array([1])})


def test_stage_from_config(sms_texts):
    cfg = TextAugmentConfig(synonyms=None)
    out = TextAugmentStage(cfg, seed=0, n_aug=3)(_batch(sms_texts[:4], np.arange(4)))
    assert len(out["text"]) == 16
    with pytest.raises(ShardtrainError, match="unknown"):
        TextAugmentStage(TextAugmentConfig(method="bogus", synonyms=None), seed=0)


def test_nlpaug_keyboard_seeded_and_restores_global_rng():
    aug = NlpAug("keyboard", seed=0, n_aug=2, aug_char_p=0.3, aug_word_p=0.5)
    text = "please call our customer service representative tomorrow"
    random.seed(11)
    np.random.seed(11)
    expect_py, expect_np = random.random(), np.random.random()
    random.seed(11)
    np.random.seed(11)
    a = aug(text, sample_id=4)
    assert (random.random(), np.random.random()) == (expect_py, expect_np)
    assert a == aug(text, sample_id=4) and a != aug(text, sample_id=5)
    assert len(a) == 2 and a[0] != a[1] and all(s != text for s in a)


def test_nlpaug_spelling_works_offline_and_synonym_op():
    spell = NlpAug("spelling", seed=0, n_aug=1, aug_p=0.5)
    out = spell("because they received their message tomorrow")[0]
    assert out != "because they received their message tomorrow"
    syn = NlpAug("synonym", seed=0, n_aug=1, synonyms=SYN, aug_p=0.1)
    assert syn("Wbord 123! waord")[0].split()[1] == "123!"


@pytest.mark.parametrize("kind,resource", [("synonym_wordnet", "nltk"), ("antonym", "nltk"),
                                           ("context_word_embs", "transformers|model_path"),
                                           ("back_translation", "transformers|from_model_name")])
def test_nlpaug_kinds_needing_downloads_raise(kind, resource):
    with pytest.raises(ShardtrainError, match=resource):
        NlpAug(kind, model_path="/nonexistent/model", from_model_name="/nonexistent/model")


def test_nlpaug_spelling_missing_dictionary_is_named():
    with pytest.raises(ShardtrainError, match="/nonexistent/spelling_en.txt"):
        NlpAug("spelling", dict_path="/nonexistent/spelling_en.txt")


def test_stage_accepts_a_config_with_only_eda_fields(sms_texts):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class EdaOnly:  # the shape of shardtrain.config.TextAugmentConfig
        alpha_sr: float = 0.1
        alpha_ri: float = 0.1
        alpha_rs: float = 0.1
        p_rd: float = 0.1
        synonyms: str | None = None

    out = TextAugmentStage(EdaOnly(), seed=0, n_aug=2)(_batch(sms_texts[:5], np.arange(5)))
    assert out["aug_index"].tolist() == [0, 1, 2] * 5


def test_batch_refuses_reaugmenting_and_huge_ids(sms_texts):
    eda = EDA(synonyms=SYN, n_aug=1)
    once = eda.augment_batch(_batch(sms_texts[:2], np.array([0, 1])))
    with pytest.raises(ShardtrainError, match="augmented twice"):
        eda.augment_batch(once)
    with pytest.raises(ShardtrainError, match="outside"):
        eda.augment_batch(_batch(sms_texts[:1], np.array([1 << AUG_ID_SHIFT])))

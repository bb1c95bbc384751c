"""Synonym sources: Open English WordNet, user dictionaries, load_synonyms specs and errors."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from shardtrain.augment.synonyms import (DictSynonyms, NLTKWordNetSynonyms, OEWNSynonyms, SynonymSource,
                              load_synonyms)
from shardtrain.core.errors import ShardtrainError

try:
    from tests.conftest import DATA_DIR, dataset_dir
except ImportError:
    DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
OEWN = DATA_DIR / "oewn-2025" / "oewn-2025-synsets.tsv.gz"


@pytest.fixture(scope="module")
def oewn() -> OEWNSynonyms:
    dataset_dir("oewn-2025")  # skips naming the resource when it is absent
    return OEWNSynonyms(OEWN)


def test_oewn_spot_checks(oewn):
    assert isinstance(oewn, SynonymSource)
    car = oewn.synonyms("car")
    assert {"automobile", "auto", "motorcar", "machine", "railcar"} <= set(car)
    assert "car" not in car and car == sorted(car)
    assert "speedy" in oewn.synonyms("Quick")
    assert "purchase" in oewn.synonyms("buy")
    assert oewn.synonyms("xyzzyplugh") == []


def test_oewn_multiword_and_pos_options(oewn):
    assert "railway car" in oewn.synonyms("car")
    single = OEWNSynonyms(OEWN, multiword=False)
    assert single.synonyms("car") and all(" " not in s for s in single.synonyms("car"))
    verbs = OEWNSynonyms(OEWN, pos="v")
    assert "purchase" in verbs.synonyms("buy") and verbs.synonyms("car") == []


def test_oewn_is_cached_per_path(oewn):
    assert OEWNSynonyms(OEWN)._table is oewn._table


def test_oewn_small_table(tmp_path):
    path = tmp_path / "mini.tsv.gz"
    rows = ["synset_id\tpos\tlexfile\tili\tmembers\tdefinition",
            "1-n\tn\tnoun.x\ti1\tCar|auto|motor car\ta vehicle",
            "2-n\tn\tnoun.x\ti2\tcar|gondola\tpart of a balloon",
            "3-v\tv\tverb.x\ti3\tgo\tmove"]
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    src = OEWNSynonyms(path)
    assert src.synonyms("car") == ["auto", "gondola", "motor car"]
    assert src.synonyms("gondola") == ["car"] and src.synonyms("go") == []
    assert isinstance(load_synonyms(str(path)), OEWNSynonyms)


def test_missing_synonym_file_errors(tmp_path):
    missing = tmp_path / "nope.tsv.gz"
    with pytest.raises(ShardtrainError) as err:
        OEWNSynonyms(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ShardtrainError, match="nope.json"):
        load_synonyms(str(tmp_path / "nope.json"))
    with pytest.raises(ShardtrainError, match="oewn-2025-synsets.tsv.gz"):
        load_synonyms("oewn", data_dir=tmp_path)


@pytest.mark.dataset("oewn-2025")
def test_load_synonyms_specs(tmp_path):
    assert load_synonyms(None) is None
    assert isinstance(load_synonyms("oewn", data_dir=DATA_DIR), OEWNSynonyms)
    tsv = tmp_path / "syn.tsv"
    tsv.write_text("# my words\nwin\tvictory|triumph\tWin\nfree\tgratis\n", encoding="utf-8")
    src = load_synonyms(str(tsv))
    assert src.synonyms("WIN") == ["victory", "triumph"] and src.synonyms("free") == ["gratis"]
    js = tmp_path / "syn.json"
    js.write_text(json.dumps({"prize": ["award", "prize"]}), encoding="utf-8")
    assert load_synonyms(str(js)).synonyms("prize") == ["award"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("lonely\n", encoding="utf-8")
    with pytest.raises(ShardtrainError, match="line 1"):
        load_synonyms(str(bad))


def test_dict_synonyms_normalises():
    src = DictSynonyms({"Car": ["Auto", "car", "auto", " motorcar "]})
    assert src.synonyms("car") == ["auto", "motorcar"] and len(src) == 1


@pytest.mark.skipif(importlib.util.find_spec("nltk") is not None, reason="nltk is installed here")
def test_nltk_source_names_missing_package():
    with pytest.raises(ShardtrainError, match="nltk"):
        NLTKWordNetSynonyms()
    with pytest.raises(ShardtrainError, match="nltk"):
        load_synonyms("nltk")

"""Text pipeline throughput: our EDA and hashed n-grams vs straightforward baselines.

    PYTHONPATH=. python benchmarks/bench_text.py [--quick] [--data-dir ../shared/data]

* EDA on real SMS messages with Open English WordNet synonyms, one process, 9 copies per
  message. Baseline: the straightforward per-call style of the EDA reference implementation
  (Python ``random``, character-by-character cleaning, a synonym set rebuilt and cleaned per
  lookup as with ``wordnet.synsets``), written here, on the same OEWN table.
* Hashed word 1-2 + char_wb 3-5 n-grams into 2**16 buckets. Baseline: scikit-learn's
  ``HashingVectorizer`` (word and char_wb vectorizers, summed) when installed, else a per-token
  Python loop over the same documented hash.
* Loading the OEWN synonym table: vectorised (ours) vs a Python loop over synsets.

`run(quick)` returns rows ``{name, ours, baseline, unit, ratio, goal}``; ratio > 1 means ours is
better (throughputs: ours / baseline; times: baseline / ours). Times are CPU seconds of this
process (``time.process_time``), so figures are per core even on a busy machine; runs
alternate ours and baseline and keep each one's best.
Never run as a test.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shardtrain.augment.eda import EDA, STOP_WORDS
from shardtrain.augment.synonyms import OEWN_DIR, OEWN_FILE, OEWNSynonyms, _OEWN_CACHE
from shardtrain.features.text import TextFeatureConfig, hashed_ngrams, token_hash, word_ngram_hash

N_AUG = 9
EDA_GOAL = 20_000  # augmented sentences per second per core


def default_data_dir() -> Path:
    """``$SHARDTRAIN_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("SHARDTRAIN_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def sms_texts(data_dir: Path) -> list[str]:
    """The 5,574 SMS messages (text column only)."""
    lines = (data_dir / "sms-spam" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines]


class NaiveEDA:
    """Baseline: EDA written the straightforward way, one sentence and one call at a time."""

    def __init__(self, raw: dict[str, tuple[str, ...]], seed: int = 0) -> None:
        self.raw = raw            # lemma -> raw synonyms, standing in for wordnet.synsets()
        self.rand = random.Random(seed)

    @staticmethod
    def clean(line: str) -> str:
        out = ""
        for ch in line.replace("'", "").replace("-", " ").lower():
            out += ch if ch in "qwertyuiopasdfghjklzxcvbnm " else " "
        return re.sub(" +", " ", out).strip()

    def get_synonyms(self, word: str) -> list[str]:
        found = set()
        for s in self.raw.get(word, ()):
            s = s.replace("_", " ").replace("-", " ").lower()
            found.add("".join(c for c in s if c in " qwertyuiopasdfghjklzxcvbnm"))
        found.discard(word)
        return sorted(found)

    def sr(self, words: list[str], n: int) -> list[str]:
        new = words.copy()
        cands = sorted(set(w for w in words if w not in STOP_WORDS))
        self.rand.shuffle(cands)
        done = 0
        for w in cands:
            syns = self.get_synonyms(w)
            if syns:
                s = self.rand.choice(syns)
                new = [s if x == w else x for x in new]
                done += 1
            if done >= n:
                break
        return " ".join(new).split(" ")

    def ri(self, words: list[str], n: int) -> list[str]:
        new = words.copy()
        for _ in range(n):
            for _try in range(10):
                syns = self.get_synonyms(new[self.rand.randint(0, len(new) - 1)])
                if syns:
                    new.insert(self.rand.randint(0, len(new) - 1), self.rand.choice(syns))
                    break
        return new

    def rs(self, words: list[str], n: int) -> list[str]:
        new = words.copy()
        for _ in range(n):
            i, j = self.rand.randint(0, len(new) - 1), self.rand.randint(0, len(new) - 1)
            new[i], new[j] = new[j], new[i]
        return new

    def rd(self, words: list[str], p: float) -> list[str]:
        if len(words) == 1:
            return words
        kept = [w for w in words if self.rand.uniform(0, 1) > p]
        return kept or [self.rand.choice(words)]

    def __call__(self, sentence: str) -> list[str]:
        words = [w for w in self.clean(sentence).split(" ") if w]
        if not words:
            return [sentence] * N_AUG
        n = max(1, int(0.1 * len(words)))
        per = N_AUG // 4 + 1
        out = [" ".join(op(words, arg)) for op, arg in ((self.sr, n), (self.ri, n), (self.rs, n),
                                                        (self.rd, 0.1)) for _ in range(per)]
        out = [self.clean(s) for s in out]
        self.rand.shuffle(out)
        return out[:N_AUG]


def naive_oewn_table(path: Path) -> dict[str, tuple[str, ...]]:
    """Baseline loader: a Python loop over the synset rows."""
    table: dict[str, set[str]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            members = row["members"].lower().split("|")
            for m in members:
                table.setdefault(m, set()).update(x for x in members if x != m)
    return {k: tuple(sorted(v)) for k, v in table.items() if v}


def naive_hashed(texts: list[str], cfg: TextFeatureConfig) -> list[dict[int, float]]:
    """Fallback features baseline: the documented tokenisation and hash, one token at a time."""
    from shardtrain.features.text import NS_CHAR

    rows = []
    for text in texts:
        text = text.lower()
        toks = re.findall(r"\w+|[^\w\s]", text)
        grams = [word_ngram_hash(toks[i:i + n]) for n in (1, 2) for i in range(len(toks) - n + 1)]
        for w in text.split():
            w = f" {w} "
            grams += [token_hash(w[i:i + n], NS_CHAR) for n in (3, 4, 5) for i in range(len(w) - n + 1)]
        counts: dict[int, float] = {}
        for g in grams:
            counts[g & 0xFFFF] = counts.get(g & 0xFFFF, 0) + 1
        rows.append(counts)
    return rows


def sklearn_hashed() -> Callable[[list[str]], object] | None:
    """HashingVectorizer pair (word 1-2 + char_wb 3-5, 2**16 buckets), or None without sklearn."""
    try:
        from sklearn.feature_extraction.text import HashingVectorizer
    except ImportError:
        return None
    word = HashingVectorizer(n_features=2**16, ngram_range=(1, 2), alternate_sign=False, norm=None)
    char = HashingVectorizer(n_features=2**16, analyzer="char_wb", ngram_range=(3, 5),
                             alternate_sign=False, norm=None)
    return lambda texts: word.transform(texts) + char.transform(texts)


def best_pair(ours: Callable[[], object], base: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best CPU time of each callable over `repeats` alternating runs."""
    t_ours, t_base = float("inf"), float("inf")
    for _ in range(repeats):
        start = time.process_time()
        ours()
        t_ours = min(t_ours, time.process_time() - start)
        start = time.process_time()
        base()
        t_base = min(t_base, time.process_time() - start)
    return t_ours, t_base


def run(quick: bool = False, data_dir: str | os.PathLike[str] | None = None) -> list[dict]:
    """Measure and return the benchmark rows (also printed by `main`)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    texts = sms_texts(root)[:1000 if quick else None]
    repeats = 1 if quick else 3
    oewn_path = root / OEWN_DIR / OEWN_FILE
    results = []

    import pyarrow.compute  # noqa: F401  (import cost is not load cost)
    import pyarrow.csv  # noqa: F401

    def load_ours() -> None:
        _OEWN_CACHE.clear()
        OEWNSynonyms(oewn_path)

    raw: dict[str, tuple[str, ...]] = {}
    t_ours, t_base = best_pair(load_ours, lambda: raw.update(naive_oewn_table(oewn_path)), 1)
    results.append(dict(name="oewn_synonym_table_load", ours=t_ours, baseline=t_base, unit="s",
                        ratio=t_base / t_ours, goal=None))

    source = OEWNSynonyms(oewn_path)
    eda = EDA(n_aug=N_AUG, synonyms=source, seed=0)
    ids = np.arange(len(texts), dtype=np.int64)
    eda.augment_many(texts, ids)                      # warm the synonym memo like a long-lived actor
    naive = NaiveEDA(raw, seed=0)
    t_ours, t_base = best_pair(lambda: [eda.augment_many(texts[a:a + 1024], ids[a:a + 1024])
                                        for a in range(0, len(texts), 1024)],
                               lambda: [naive(t) for t in texts], repeats)
    out_ours, out_base = N_AUG * len(texts) / t_ours, N_AUG * len(texts) / t_base
    results.append(dict(name="eda_oewn_augmented_sentences", ours=out_ours, baseline=out_base,
                        unit="augmented sentences/s/core", ratio=out_ours / out_base, goal=EDA_GOAL))
    results.append(dict(name="eda_oewn_input_sentences", ours=out_ours / N_AUG, baseline=out_base / N_AUG,
                        unit=f"input sentences/s/core ({N_AUG} copies each)", ratio=out_ours / out_base,
                        goal=None))

    cfg = TextFeatureConfig()
    batch = {"sample_id": ids, "text": np.array(texts, dtype=object)}
    sk = sklearn_hashed()
    base_fn = (lambda: sk(texts)) if sk is not None else (lambda: naive_hashed(texts, cfg))
    t_ours, t_base = best_pair(lambda: hashed_ngrams(batch, cfg), base_fn, repeats)
    results.append(dict(name="hashed_ngrams_vs_" + ("sklearn_hashingvectorizer" if sk else "python_loop"),
                        ours=len(texts) / t_ours, baseline=len(texts) / t_base, unit="rows/s/core",
                        ratio=t_base / t_ours, goal=None))
    return results


def main() -> None:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    for r in run(args.quick, args.data_dir):
        goal = f"  goal {r['goal']:,.0f}" if r["goal"] else ""
        print(f"{r['name']:40s} ours {r['ours']:>12,.2f}  baseline {r['baseline']:>12,.2f}  "
              f"{r['unit']:<38s} ratio {r['ratio']:6.2f}{goal}")


if __name__ == "__main__":
    main()

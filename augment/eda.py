"""EDA: Easy Data Augmentation (Wei & Zou, EMNLP 2019) with injected, per-copy randomness.

Follows the reference implementation (github.com/jasonwei20/eda_nlp, ``code/eda.py``):

* Cleaning (`clean_text`): drop apostrophes, lowercase, turn every character outside a-z into
  a space, split on spaces. Digits, punctuation and accents are therefore lost in augmented
  copies, exactly as in the paper; keep ``include_original`` on so the real message stays.
* ``n = max(1, int(alpha * len(words)))`` words per operation; each copy gets one operation;
  the copies' operations are ``n_aug // k + 1`` of each of the k enabled operations, shuffled
  and cut to ``n_aug`` (the reference's schedule).
* Synonym replacement picks up to n distinct non-stop words that have synonyms, in random
  order, and replaces every occurrence of each with one random synonym; multi-word synonyms
  are split back into words. Stop words (the paper's list, `STOP_WORDS`) are never replaced.
* Random deletion drops each word with probability p and never returns an empty list: when
  every word was dropped it keeps one random word; a one-word sentence is returned as is.

Deliberate differences, each to make behaviour deterministic or counts exact: candidate
words are taken in first-occurrence order (the reference iterates a Python set, whose order
depends on PYTHONHASHSEED); random insertion inserts a *random* synonym (the reference takes
the first of an unordered list) of a word drawn among the non-stop words that have synonyms
(no 10-try cap, so exactly n synonyms are inserted); random swap always swaps two distinct
positions (no 3-try cap). Without a synonym source, synonym replacement and random
insertion are skipped (logged once per process) and the copies use swap and deletion.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from augment._textbatch import CopyRngPool, expand_batch, ids_of, texts_of
from augment.synonyms import SynonymSource

log = logging.getLogger(__name__)
_warned_no_synonyms = False  # log the "no synonym source" notice once per process

# The stop-word list of the EDA reference implementation (NLTK's English list, trimmed).
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom this
that these those am is are was were be been being have has had having do does did doing a an
the and but if or because as until while of at by for with about against between into through
during before after above below to from up down in out on off over under again further then
once here there when where why how all any both each few more most other some such no nor not
only own same so than too very s t can will just don should now
""".split()) | {""}

OPERATIONS = ("sr", "ri", "rs", "rd")
_APOSTROPHES = re.compile("['\u2019]")
_NON_ALPHA = re.compile("[^a-z]+")


def clean_text(text: str) -> list[str]:
    """Return the paper's cleaned word list: no apostrophes, lowercase, a-z runs only."""
    return _NON_ALPHA.sub(" ", _APOSTROPHES.sub("", text).lower()).split()


class CleanedSynonyms:
    """Memoising view of a `SynonymSource` whose synonyms are cleaned like the reference's
    ``get_synonyms`` ('_' and '-' -> space, keep a-z and spaces): tuples, never the word itself."""

    def __init__(self, source: SynonymSource) -> None:
        self.source = source
        self._memo: dict[str, tuple[str, ...]] = {}

    def synonyms(self, word: str) -> tuple[str, ...]:
        """Return the cleaned synonyms of `word` (cached)."""
        found = self._memo.get(word)
        if found is None:
            cleaned = (" ".join(re.sub("[^a-z ]", "", s.lower().replace("_", " ").replace("-", " ")).split())
                       for s in self.source.synonyms(word))
            found = self._memo[word] = tuple(dict.fromkeys(s for s in cleaned if s and s != word))
        return found


def synonym_replacement(words: Sequence[str], n: int, synonyms: SynonymSource,
                        rng: np.random.Generator, stop_words: frozenset[str] = STOP_WORDS,
                        candidates: Sequence[str] | None = None) -> list[str]:
    """Replace every occurrence of up to `n` distinct non-stop words by one of their synonyms.

    `candidates` (the distinct non-stop words having synonyms, in first-occurrence order) may be
    passed precomputed when one sentence is augmented many times."""
    cands = candidates if candidates is not None else \
        [w for w in dict.fromkeys(words) if w not in stop_words and synonyms.synonyms(w)]
    if n <= 0 or not cands:
        return list(words)
    m = min(n, len(cands))
    u = rng.random(len(cands) + m).tolist()
    chosen = sorted(range(len(cands)), key=u.__getitem__)[:m]     # random order, first m
    repl = {}
    for i, j in enumerate(chosen):
        syns = synonyms.synonyms(cands[j])
        repl[cands[j]] = syns[int(u[len(cands) + i] * len(syns))]
    return " ".join([repl.get(w, w) for w in words]).split(" ")


def random_insertion(words: Sequence[str], n: int, synonyms: SynonymSource,
                     rng: np.random.Generator, stop_words: frozenset[str] = STOP_WORDS,
                     candidates: Sequence[str] | None = None) -> list[str]:
    """Insert `n` times a random synonym of a random non-stop word at a random position.

    `candidates` (the non-stop words having synonyms, one entry per occurrence) may be passed
    precomputed."""
    cands = candidates if candidates is not None else \
        [w for w in words if w not in stop_words and synonyms.synonyms(w)]
    if n <= 0 or not cands:
        return list(words)
    new = list(words)
    u = rng.random(3 * n).tolist()
    for t in range(n):
        syns = synonyms.synonyms(cands[int(u[3 * t] * len(cands))])
        # position in [0, len - 1] like the reference's randint(0, len(new_words) - 1)
        new.insert(int(u[3 * t + 2] * len(new)), syns[int(u[3 * t + 1] * len(syns))])
    return " ".join(new).split(" ")


def random_swap(words: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """Swap two distinct random positions, `n` times (unchanged below two words)."""
    new = list(words)
    size = len(new)
    if size < 2 or n <= 0:
        return new
    u = rng.random(2 * n).tolist()
    for t in range(n):
        i = int(u[2 * t] * size)
        j = (i + 1 + int(u[2 * t + 1] * (size - 1))) % size
        new[i], new[j] = new[j], new[i]
    return new


def random_deletion(words: Sequence[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drop each word with probability `p`; never returns an empty list for non-empty input."""
    size = len(words)
    if size <= 1:
        return list(words)
    u = rng.random(size + 1).tolist()
    kept = [w for w, r in zip(words, u) if r > p]
    return kept if kept else [words[int(u[size] * size)]]


class EDA:
    """EDA's four operations as a seeded, batch-split-independent augmenter.

    ``EDA(synonyms=load_synonyms("oewn", data_dir))("Win a FREE car now!")`` returns `n_aug`
    augmented strings; `augment_batch` expands a Ray/numpy batch. Copy c (1..n_aug) of the row
    with id s draws only from the stream (seed, s, c) (see augment._textbatch).
    """

    def __init__(self, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1,
                 p_rd: float = 0.1, n_aug: int = 9, synonyms: SynonymSource | None = None,
                 seed: int = 0, stop_words: frozenset[str] = STOP_WORDS) -> None:
        for name, value in (("alpha_sr", alpha_sr), ("alpha_ri", alpha_ri),
                            ("alpha_rs", alpha_rs), ("p_rd", p_rd)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"EDA: {name}={value} must be within [0, 1]")
        if n_aug < 0:
            raise ValueError(f"EDA: n_aug={n_aug} must be >= 0")
        self.alpha = {"sr": alpha_sr, "ri": alpha_ri, "rs": alpha_rs, "rd": p_rd}
        self.n_aug, self.seed, self.stop_words = int(n_aug), int(seed), stop_words
        self.synonyms = CleanedSynonyms(synonyms) if synonyms is not None else None
        self.ops = tuple(op for op in OPERATIONS if self.alpha[op] > 0
                         and (self.synonyms is not None or op in ("rs", "rd")))
        if self.synonyms is None and (alpha_sr > 0 or alpha_ri > 0):
            _log_no_synonyms()
        self._pool = CopyRngPool(seed)

    def __call__(self, data: Any, sample_id: int = 0) -> Any:
        """Augment a str (-> list of n_aug str, as row `sample_id`), a list of str (-> list of
        lists, row i has id i) or a batch dict (-> `augment_batch(data)`)."""
        if isinstance(data, str):
            return self.augment(data, sample_id)
        if isinstance(data, dict):
            return self.augment_batch(data)
        return [self.augment(text, i) for i, text in enumerate(data)]

    def augment(self, text: str, sample_id: int = 0) -> list[str]:
        """Return the `n_aug` augmented copies of `text` for row `sample_id` (copies 1..n_aug).

        A text with no a-z word left after cleaning is returned unchanged in every copy."""
        words = clean_text(text)
        if not words or not self.ops:
            return [" ".join(words) if words else text] * self.n_aug
        counts = {op: max(1, int(self.alpha[op] * len(words))) for op in ("sr", "ri", "rs")}
        per_op = self.n_aug // len(self.ops) + 1
        u = self._pool.at(sample_id, 0).random(per_op * len(self.ops))
        schedule = np.argsort(u, kind="stable")[:self.n_aug] // per_op   # op index per copy
        cands_ri: list[str] = []
        if self.synonyms is not None:  # the words SR / RI may pick, found once for all copies
            syn, stop = self.synonyms.synonyms, self.stop_words
            cands_ri = [w for w in words if w not in stop and syn(w)]
        cands_sr = list(dict.fromkeys(cands_ri))
        out = []
        for c, op_i in enumerate(schedule.tolist(), start=1):
            rng = self._pool.at(sample_id, c)
            op = self.ops[op_i]
            if op == "rd":
                new = random_deletion(words, self.alpha["rd"], rng)
            elif op == "rs":
                new = random_swap(words, counts["rs"], rng)
            elif op == "sr":
                new = synonym_replacement(words, counts["sr"], self.synonyms, rng, candidates=cands_sr)
            else:
                new = random_insertion(words, counts["ri"], self.synonyms, rng, candidates=cands_ri)
            out.append(" ".join(new))
        return out

    def augment_batch(self, batch: dict[str, Any], text_col: str = "text", id_col: str = "sample_id",
                      include_original: bool = True) -> dict[str, Any]:
        """Expand a batch: per row the original (aug_index 0, when asked) then n_aug copies.

        Other columns are repeated per copy; adds ``source_id`` and ``aug_index`` and gives
        copies fresh unique sample ids (see augment._textbatch). The result for a row depends
        only on (seed, its sample_id), never on the rest of the batch."""
        texts = texts_of(batch, text_col)
        ids = ids_of(batch, id_col, len(texts))
        copies = [self.augment(t, s) for t, s in zip(texts, ids.tolist())]
        return expand_batch(batch, copies, texts, text_col, id_col, include_original)


def _log_no_synonyms() -> None:
    """Log, once per process, that synonym replacement and insertion are skipped."""
    global _warned_no_synonyms
    if not _warned_no_synonyms:
        _warned_no_synonyms = True
        log.warning("EDA: no synonym source given; synonym replacement and random insertion "
                    "are skipped (set augment.synonyms: oewn)")

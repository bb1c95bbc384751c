"""EDA: Easy Data Augmentation (Wei & Zou, EMNLP 2019), seeded per (seed, sample_id, copy).

Follows the reference implementation (github.com/jasonwei20/eda_nlp, ``code/eda.py``):

* Cleaning (`clean_text`): drop apostrophes, lowercase, turn every character outside a-z into
  a space, split. Digits, punctuation and accents are therefore lost in augmented copies, as
  in the paper; keep ``include_original`` on so the real message stays (aug_index 0). A text
  with no a-z word left is returned unchanged in every copy (never an empty string).
* ``n = max(1, int(alpha * len(words)))`` words per operation; each copy gets one operation;
  the copies' operations are ``n_aug // k + 1`` of each of the k enabled operations, shuffled
  and cut to ``n_aug`` (the reference's schedule).
* Synonyms are cleaned like the reference's ``get_synonyms`` and may span several words
  ("motor vehicle"); they are split back into words after replacement / insertion.
* Synonym replacement picks up to n distinct non-stop words that have synonyms, in random
  order, and replaces every occurrence of each with one random synonym. Stop words (the
  paper's list, `STOP_WORDS`) are never replaced.
* Random deletion drops each word with probability p and never returns an empty list: when
  every word was dropped it keeps one random word; a one-word sentence is returned as is.

Deliberate differences, each to make behaviour deterministic or counts exact: candidate
words are taken in first-occurrence order (the reference iterates a Python set, whose order
depends on PYTHONHASHSEED); random insertion inserts a *random* synonym (the reference takes
the first of an unordered list) of a word drawn among the *non-stop* words that have synonyms
(the reference also draws stop words, so "i" could insert "iodine"; and it gives up after 10
tries, we insert exactly n); random swap always swaps two distinct positions (no 3-try cap).
Without a synonym source, synonym replacement and random insertion are skipped (logged once
per process) and the copies use swap and deletion.

Sampling is split from applying: `draws_needed` says how many uniforms an operation uses and
``apply_*`` edits the words given them. The public operations (`synonym_replacement`, ...)
draw those uniforms from an injected ``numpy.random.Generator``; `EDA` draws copy c of row s
from the stream (seed, s, c) of `shardtrain.augment._textbatch.copy_uniforms`, for a whole batch at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from shardtrain.augment._textbatch import copy_uniforms, expand_batch, ids_of, texts_of
from shardtrain.augment.synonyms import SynonymSource

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
        self.memo: dict[str, tuple[str, ...]] = {}  # word -> cleaned synonyms, read directly by EDA

    def synonyms(self, word: str) -> tuple[str, ...]:
        """Return the cleaned synonyms of `word` (cached)."""
        found = self.memo.get(word)
        if found is None:
            cleaned = (" ".join(re.sub("[^a-z ]", "", s.lower().replace("_", " ").replace("-", " ")).split())
                       for s in self.source.synonyms(word))
            found = self.memo[word] = tuple(dict.fromkeys(s for s in cleaned if s and s != word))
        return found


def draws_needed(op: str, size: int, n: int, n_candidates: int) -> int:
    """How many uniforms operation `op` consumes on `size` words with count `n` (alpha-derived,
    or ignored for "rd") when `n_candidates` words have synonyms (distinct ones for "sr")."""
    if op == "sr":
        return n_candidates + min(n, n_candidates) if n > 0 and n_candidates else 0
    if op == "ri":
        return 3 * n if n > 0 and n_candidates else 0
    if op == "rs":
        return 2 * n if size >= 2 and n > 0 else 0
    return size + 1 if size >= 2 else 0


def apply_sr(words: Sequence[str], n: int, synonyms: SynonymSource, cands: Sequence[str],
             u: Sequence[float]) -> list[str]:
    """Synonym replacement given its uniforms (``draws_needed("sr", ...)`` of them)."""
    if not u:
        return list(words)
    k, m = len(cands), min(n, len(cands))
    repl = {}
    for i, j in enumerate(sorted(range(k), key=u.__getitem__)[:m]):    # random order, first m
        syns = synonyms.synonyms(cands[j])
        repl[cands[j]] = syns[int(u[k + i] * len(syns))]
    return " ".join([repl.get(w, w) for w in words]).split(" ")


def apply_ri(words: Sequence[str], n: int, synonyms: SynonymSource, cands: Sequence[str],
             u: Sequence[float]) -> list[str]:
    """Random insertion given its uniforms."""
    if not u:
        return list(words)
    new = list(words)
    for t in range(n):
        syns = synonyms.synonyms(cands[int(u[3 * t] * len(cands))])
        # position in [0, len - 1] like the reference's randint(0, len(new_words) - 1)
        new.insert(int(u[3 * t + 2] * len(new)), syns[int(u[3 * t + 1] * len(syns))])
    return " ".join(new).split(" ")


def apply_rs(words: Sequence[str], n: int, u: Sequence[float]) -> list[str]:
    """Random swap given its uniforms."""
    new = list(words)
    size = len(new)
    for t in range(len(u) // 2):
        i = int(u[2 * t] * size)
        j = (i + 1 + int(u[2 * t + 1] * (size - 1))) % size
        new[i], new[j] = new[j], new[i]
    return new


def apply_rd(words: Sequence[str], p: float, u: Sequence[float]) -> list[str]:
    """Random deletion given its uniforms."""
    if not u:
        return list(words)
    kept = [w for w, r in zip(words, u) if r > p]
    return kept if kept else [words[int(u[len(words)] * len(words))]]


def _sr_candidates(words: Sequence[str], synonyms: SynonymSource, stop_words: frozenset[str]) -> list[str]:
    """Distinct non-stop words having synonyms, in first-occurrence order."""
    return [w for w in dict.fromkeys(words) if w not in stop_words and synonyms.synonyms(w)]


def synonym_replacement(words: Sequence[str], n: int, synonyms: SynonymSource,
                        rng: np.random.Generator, stop_words: frozenset[str] = STOP_WORDS) -> list[str]:
    """Replace every occurrence of up to `n` distinct non-stop words by one of their synonyms."""
    cands = _sr_candidates(words, synonyms, stop_words)
    u = rng.random(draws_needed("sr", len(words), n, len(cands))).tolist()
    return apply_sr(words, n, synonyms, cands, u)


def random_insertion(words: Sequence[str], n: int, synonyms: SynonymSource,
                     rng: np.random.Generator, stop_words: frozenset[str] = STOP_WORDS) -> list[str]:
    """Insert `n` times a random synonym of a random non-stop word at a random position."""
    cands = [w for w in words if w not in stop_words and synonyms.synonyms(w)]
    u = rng.random(draws_needed("ri", len(words), n, len(cands))).tolist()
    return apply_ri(words, n, synonyms, cands, u)


def random_swap(words: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """Swap two distinct random positions, `n` times (unchanged below two words)."""
    return apply_rs(words, n, rng.random(draws_needed("rs", len(words), n, 0)).tolist())


def random_deletion(words: Sequence[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drop each word with probability `p`; never returns an empty list for non-empty input."""
    return apply_rd(words, p, rng.random(draws_needed("rd", len(words), 0, 0)).tolist())


class EDA:
    """EDA's four operations as a seeded, batch-split-independent augmenter.

    ``EDA(synonyms=load_synonyms("oewn", data_dir))("Win a FREE car now!")`` returns `n_aug`
    augmented strings; `augment_batch` expands a Ray/numpy batch. Copy c (1..n_aug) of the row
    with id s draws only from the uniform stream (seed, s, c) of `shardtrain.augment._textbatch`; the
    draws of a whole batch are computed in two vectorised passes (which operation each copy
    gets, then every operation's numbers), and only the word edits run in Python.
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

    def __call__(self, data: Any, sample_id: int = 0) -> Any:
        """Augment a str (-> list of n_aug str, as row `sample_id`), a list of str (-> list of
        lists, row i has id i) or a batch dict (-> `augment_batch(data)`)."""
        if isinstance(data, str):
            return self.augment(data, sample_id)
        if isinstance(data, dict):
            return self.augment_batch(data)
        return self.augment_many(list(data), np.arange(len(data)))

    def augment(self, text: str, sample_id: int = 0) -> list[str]:
        """Return the `n_aug` augmented copies of `text` for row `sample_id` (copies 1..n_aug)."""
        return self.augment_many([text], np.array([sample_id]))[0]

    def augment_many(self, texts: Sequence[str], sample_ids: np.ndarray) -> list[list[str]]:
        """Return the `n_aug` copies of every text (row i has id sample_ids[i]).

        A text with no a-z word left after cleaning is returned unchanged in every copy."""
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        words_of = [clean_text(t) for t in texts]
        out = [[" ".join(w) if w and not self.ops else t] * self.n_aug for t, w in zip(texts, words_of)]
        rows = [i for i, w in enumerate(words_of) if w] if self.ops and self.n_aug else []
        if not rows:
            return out
        # Pass 1: stream 0 of each row orders (n_aug // k + 1) slots per operation; first n_aug win.
        per_op = self.n_aug // len(self.ops) + 1
        slots = per_op * len(self.ops)
        u0 = copy_uniforms(self.seed, sample_ids[rows], 0, np.full(len(rows), slots))
        schedule = (np.argsort(u0.reshape(len(rows), slots), axis=1, kind="stable")[:, :self.n_aug]
                    // per_op).tolist()                                      # (R, n_aug) op index
        # Pass 2: every copy's draws at once, after finding each row's candidate words.
        plans, counts = [], []
        syn = self.synonyms.synonyms if self.synonyms is not None else None
        memo = self.synonyms.memo if self.synonyms is not None else {}
        stop = self.stop_words
        for r, i in enumerate(rows):
            words = words_of[i]
            cands_ri = [w for w in words if w not in stop and (memo[w] if w in memo else syn(w))] \
                if syn else []
            cands_sr = list(dict.fromkeys(cands_ri))
            size = len(words)
            n = {op: max(1, int(self.alpha[op] * size)) for op in ("sr", "ri", "rs")}
            for op_i in schedule[r]:
                op = self.ops[op_i]
                cands = cands_sr if op == "sr" else cands_ri
                plans.append((i, op, n.get(op, 0), cands))
                counts.append(draws_needed(op, size, n.get(op, 0), len(cands)))
        copies = np.tile(np.arange(1, self.n_aug + 1), len(rows))
        u = copy_uniforms(self.seed, np.repeat(sample_ids[rows], self.n_aug), copies, counts).tolist()
        pos = 0
        for k, ((i, op, n, cands), cnt) in enumerate(zip(plans, counts)):
            words, draws = words_of[i], u[pos:pos + cnt]
            pos += cnt
            if op == "rd":
                new = apply_rd(words, self.alpha["rd"], draws)
            elif op == "rs":
                new = apply_rs(words, n, draws)
            elif op == "sr":
                new = apply_sr(words, n, self.synonyms, cands, draws)
            else:
                new = apply_ri(words, n, self.synonyms, cands, draws)
            out[i][k % self.n_aug] = " ".join(new)
        return out

    def augment_batch(self, batch: dict[str, Any], text_col: str = "text", id_col: str = "sample_id",
                      include_original: bool = True) -> dict[str, Any]:
        """Expand a batch: per row the original (aug_index 0, when asked) then n_aug copies.

        Other columns are repeated per copy; adds ``source_id`` and ``aug_index`` and gives
        copies fresh unique sample ids (see shardtrain.augment._textbatch). The result for a row depends
        only on (seed, its sample_id), never on the rest of the batch."""
        texts = texts_of(batch, text_col)
        ids = ids_of(batch, id_col, len(texts))
        return expand_batch(batch, self.augment_many(texts, ids), texts, text_col, id_col,
                            include_original)


def _log_no_synonyms() -> None:
    """Log, once per process, that synonym replacement and insertion are skipped."""
    global _warned_no_synonyms
    if not _warned_no_synonyms:
        _warned_no_synonyms = True
        log.warning("EDA: no synonym source given; synonym replacement and random insertion "
                    "are skipped (set shardtrain.augment.synonyms: oewn)")

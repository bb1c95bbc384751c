"""Synonym sources for EDA: Open English WordNet, NLTK's WordNet, or a plain user dictionary.

Every source answers one question, ``synonyms(word) -> list[str]`` (the `SynonymSource`
protocol); EDA never needs to know which one it got. Lookups are by lowercased word and
return lowercased synonyms in a fixed (sorted) order, so augmentation is deterministic.

Multi-word synonyms ("motor vehicle") are kept with a space between the words, as the EDA
reference implementation does (it splits them back into words after replacement); pass
``multiword=False`` to `OEWNSynonyms` to keep single-word synonyms only.

Nothing here reads a file or imports NLTK until a source is constructed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from shardtrain.core.errors import ShardtrainError

OEWN_DIR = "oewn-2025"
OEWN_FILE = "oewn-2025-synsets.tsv.gz"
_OEWN_COLUMNS = ("synset_id", "pos", "members")

# (resolved path, pos, multiword) -> synonym table; filled on first use, per process.
_OEWN_CACHE: dict[tuple[str, str | None, bool], _SynonymTable] = {}


@runtime_checkable
class SynonymSource(Protocol):
    """Anything that maps a word to its synonyms (an empty list when it knows none)."""

    def synonyms(self, word: str) -> list[str]:
        """Return the synonyms of `word` (lowercased, deterministic order, never `word` itself)."""
        ...


class DictSynonyms:
    """A user dictionary ``{word: [synonym, ...]}`` as a `SynonymSource`.

    Keys and synonyms are lowercased and stripped; a synonym equal to its key is dropped, and
    duplicates are removed keeping the first occurrence. Example:
    ``DictSynonyms({"car": ["automobile", "auto"]}).synonyms("Car") == ["automobile", "auto"]``.
    """

    def __init__(self, mapping: Mapping[str, Iterable[str]]) -> None:
        table: dict[str, tuple[str, ...]] = {}
        for key, values in mapping.items():
            word = str(key).strip().lower()
            syns = (str(v).strip().lower() for v in values)
            table[word] = tuple(dict.fromkeys(s for s in syns if s and s != word))
        self._table = table

    def synonyms(self, word: str) -> list[str]:
        """Return the synonyms listed for `word` (case-insensitive), or []."""
        return list(self._table.get(word.lower(), ()))

    def __len__(self) -> int:
        return len(self._table)


class OEWNSynonyms:
    """Synonyms from Open English WordNet's synset table (``oewn-2025-synsets.tsv.gz``).

    A lemma's synonyms are the union, over every synset containing it, of that synset's other
    members, lowercased and sorted (see the data's PROVENANCE.md: ``car`` -> auto, automobile,
    machine, motorcar, railcar, ...). `pos` keeps only synsets of those parts of speech (e.g.
    "nv"; "a" includes the satellite adjectives "s"). The table is built vectorised (pyarrow's
    CSV reader and string kernels, numpy for the pairs) and cached per (path, pos, multiword)
    for the life of the process, so every EDA instance in a Ray worker shares one copy.
    """

    def __init__(self, path: str | os.PathLike[str], pos: str | None = None,
                 multiword: bool = True) -> None:
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise ShardtrainError(f"{path}: synonym file not found (Open English WordNet synset table)")
        self.path = resolved
        key = (str(resolved), pos, multiword)
        if key not in _OEWN_CACHE:
            _OEWN_CACHE[key] = _load_oewn(resolved, pos, multiword)
        self._table = _OEWN_CACHE[key]

    def synonyms(self, word: str) -> list[str]:
        """Return the other members of every synset containing `word` (case-insensitive), or []."""
        return self._table.lookup(word.lower())

    def __len__(self) -> int:
        return self._table.n_with_synonyms


class _SynonymTable:
    """CSR table: lemma code -> sorted synonym codes, with the lemma strings and their codes."""

    def __init__(self, names: list[str], starts: np.ndarray, syn: np.ndarray) -> None:
        self.names = names                                    # (U,) sorted lemmas
        self.code = dict(zip(names, range(len(names))))
        self.starts = starts.tolist()                         # (U + 1,) CSR offsets into syn
        self.syn = syn                                        # (P,) int32 synonym codes
        self.n_with_synonyms = int(np.count_nonzero(np.diff(starts)))

    def lookup(self, lemma: str) -> list[str]:
        """Synonyms of an already lowercased lemma (sorted), or []."""
        c = self.code.get(lemma)
        if c is None:
            return []
        names = self.names
        return [names[j] for j in self.syn[self.starts[c]:self.starts[c + 1]].tolist()]


def _load_oewn(path: Path, pos: str | None, multiword: bool) -> _SynonymTable:
    """Read the synset table and build ``lemma -> sorted other members`` without a Python loop
    over synsets: split members with Arrow kernels, form all within-synset pairs with index
    arithmetic, and deduplicate the pairs as integer codes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(include_columns=list(_OEWN_COLUMNS),
                                                 column_types={c: pa.string() for c in _OEWN_COLUMNS}))
    except (pa.ArrowInvalid, KeyError) as exc:
        raise ShardtrainError(f"{path}: not an OEWN synset table (need columns "
                              f"{', '.join(_OEWN_COLUMNS)}): {str(exc).splitlines()[0]}") from None
    if pos is not None:
        allowed = sorted(set(pos) | ({"s"} if "a" in pos else set()))
        table = table.filter(pc.is_in(table["pos"], value_set=pa.array(allowed)))
    lists = pc.split_pattern(pc.utf8_lower(table["members"].combine_chunks()), "|")
    lemmas = pc.list_flatten(lists)                                          # (M,) member rows
    synset = pc.list_parent_indices(lists).to_numpy()                        # (M,) synset per row
    if not multiword:
        keep = pc.invert(pc.match_substring(lemmas, " "))
        lemmas, synset = lemmas.filter(keep), synset[keep.to_numpy(zero_copy_only=False)]
    names = pc.unique(lemmas)
    names = names.take(pc.array_sort_indices(names))                         # (U,) sorted lemmas
    codes = pc.index_in(lemmas, value_set=names).to_numpy().astype(np.int64)  # (M,)
    sizes = np.bincount(synset, minlength=len(table)) if len(synset) else np.zeros(0, np.int64)
    starts = np.cumsum(sizes) - sizes                                        # (S,) first row of synset
    # Every member row i pairs with every row of its synset: row i repeats sizes[synset[i]] times.
    reps = sizes[synset]                                                     # (M,)
    left = np.repeat(np.arange(len(codes)), reps)                            # (P,)
    right = starts[synset[left]] + np.arange(len(left)) - np.repeat(np.cumsum(reps) - reps, reps)
    a, b = codes[left], codes[right]
    pair = np.sort(a[a != b] * len(names) + b[a != b])                       # sorted by (lemma, syn)
    if len(pair):
        pair = pair[np.concatenate([[True], pair[1:] != pair[:-1]])]
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair // len(names), minlength=len(names)), out=offsets[1:])
    return _SynonymTable(names.to_pylist(), offsets, (pair % len(names)).astype(np.int32))


class NLTKWordNetSynonyms:
    """Synonyms from NLTK's WordNet corpus (lemma names of every synset of the word).

    Needs the ``nltk`` package and its ``wordnet`` corpus already installed (nothing is
    downloaded); otherwise construction raises a `ShardtrainError` naming what is missing.
    Underscores in lemma names become spaces, as in the EDA reference implementation.
    """

    def __init__(self) -> None:
        try:
            from nltk.corpus import wordnet
        except ImportError:
            raise ShardtrainError("synonyms 'nltk': the nltk package is not installed "
                                  "(pip install nltk); use synonyms: oewn instead") from None
        try:
            wordnet.ensure_loaded()
        except LookupError:
            raise ShardtrainError("synonyms 'nltk': NLTK resource 'corpora/wordnet' is not installed "
                                  "(python -m nltk.downloader wordnet); use synonyms: oewn instead") from None
        self._wordnet = wordnet
        self._memo: dict[str, tuple[str, ...]] = {}

    def synonyms(self, word: str) -> list[str]:
        """Return the lemma names of every WordNet synset of `word`, sorted, without `word`."""
        word = word.lower()
        if word not in self._memo:
            names = {lemma.replace("_", " ").lower()
                     for syn in self._wordnet.synsets(word) for lemma in syn.lemma_names()}
            names.discard(word)
            self._memo[word] = tuple(sorted(names))
        return list(self._memo[word])


def read_synonym_dict(path: str | os.PathLike[str]) -> DictSynonyms:
    """Read a user synonym dictionary: JSON ``{word: [synonyms]}``, or a TSV whose lines are
    ``word<TAB>synonym[<TAB>synonym...]`` (a cell may also hold ``|``-joined synonyms).

    Raises a one-line `ShardtrainError` naming the file (and line) when it is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ShardtrainError(f"{path}: synonym file not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShardtrainError(f"{path}: not a JSON synonym dictionary ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ShardtrainError(f"{path}: expected a JSON object mapping words to lists of synonyms")
        return DictSynonyms(data)
    table: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ShardtrainError(f"{path}: synonym dictionary is not UTF-8") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        word, *cells = line.split("\t")
        if not cells:
            raise ShardtrainError(f"{path}: line {lineno}: expected word<TAB>synonym...")
        table.setdefault(word, []).extend(s for c in cells for s in c.split("|"))
    return DictSynonyms(table)


def _is_oewn_table(path: Path) -> bool:
    """True when the file's header names the OEWN synset table columns."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    return all(col in header for col in _OEWN_COLUMNS)


def load_synonyms(spec: str | None, data_dir: str | os.PathLike[str] | None = None) -> SynonymSource | None:
    """Build a synonym source from a config value.

    `spec` is None (no source: EDA skips synonym replacement and insertion), ``"oewn"`` (the
    synset table under ``<data_dir>/oewn-2025/``; data_dir defaults to ``$SHARDTRAIN_DATA``),
    ``"nltk"``, or a path to an OEWN synset table, a TSV dictionary or a JSON dictionary.
    """
    if spec is None or spec == "" or spec == "none":
        return None
    if spec == "nltk":
        return NLTKWordNetSynonyms()
    if spec == "oewn":
        root = data_dir if data_dir is not None else os.environ.get("SHARDTRAIN_DATA")
        if root is None:
            raise ShardtrainError("synonyms 'oewn' needs a data directory (--data-dir or $SHARDTRAIN_DATA)")
        return OEWNSynonyms(Path(root) / OEWN_DIR / OEWN_FILE)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ShardtrainError(f"{spec}: synonym file not found")
    if path.suffix.lower() != ".json" and _is_oewn_table(path):
        return OEWNSynonyms(path)
    return read_synonym_dict(path)

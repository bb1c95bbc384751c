"""Seeded wrappers around nlpaug augmenters that work offline, plus synonym replacement from
our own synonym sources.

``NlpAug("keyboard", seed=0, n_aug=2, aug_char_p=0.1)("free entry in 2 a wkly comp")``
returns two noisy copies. nlpaug is imported only when an `NlpAug` is built.

Offline kinds (extra keyword arguments go to the nlpaug constructor):
``keyboard`` (KeyboardAug), ``ocr`` (OcrAug), ``char_random`` (RandomCharAug, ``action=``
insert/substitute/swap/delete), ``word_random`` (RandomWordAug, ``action=`` swap/delete/crop/
substitute), ``spelling`` (SpellingAug with the misspelling dictionary bundled in nlpaug, or
``dict_path=``), and ``synonym`` (our op: `synonym_replacement` on whitespace tokens with any
`SynonymSource`, ``synonyms=``, ``aug_p=``; no nlpaug needed).

Kinds needing resources that nlpaug would download (``synonym_wordnet``, ``antonym``,
``context_word_embs``, ``word_embs``, ``back_translation``, ``tfidf``) raise a one-line
`ShardtrainError` naming the missing resource unless it is already installed locally; we never
let nlpaug call ``nltk.download`` or fetch a model.

Determinism: nlpaug draws from Python's ``random`` and NumPy's global RNG. Each call seeds both
from our (seed, sample_id, copy) stream, runs, and restores their previous states, under a
lock. Limitation: a thread that uses those global RNGs *during* the call (outside our lock)
both disturbs and is disturbed by it; results are also only as stable as nlpaug's own code
across nlpaug versions (pinned 1.1.11).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np

from shardtrain.augment._textbatch import copy_uniforms, expand_batch, ids_of, texts_of
from shardtrain.augment.eda import STOP_WORDS, CleanedSynonyms
from shardtrain.augment.synonyms import SynonymSource
from shardtrain.core.errors import ShardtrainError

_OFFLINE = {
    "keyboard": ("nlpaug.augmenter.char", "KeyboardAug"),
    "ocr": ("nlpaug.augmenter.char", "OcrAug"),
    "char_random": ("nlpaug.augmenter.char", "RandomCharAug"),
    "word_random": ("nlpaug.augmenter.word", "RandomWordAug"),
    "spelling": ("nlpaug.augmenter.word", "SpellingAug"),
}
# kind -> (nlpaug class, python modules needed, NLTK resources needed, path argument needed)
_NEEDS_RESOURCES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str | None]] = {
    "synonym_wordnet": ("SynonymAug", ("nltk",), ("corpora/wordnet", "corpora/omw-1.4",
                                                   "taggers/averaged_perceptron_tagger_eng"), None),
    "antonym": ("AntonymAug", ("nltk",), ("corpora/wordnet", "corpora/omw-1.4",
                                          "taggers/averaged_perceptron_tagger_eng"), None),
    "context_word_embs": ("ContextualWordEmbsAug", ("torch", "transformers"), (), "model_path"),
    "word_embs": ("WordEmbsAug", ("gensim",), (), "model_path"),
    "back_translation": ("BackTranslationAug", ("torch", "transformers"), (), "from_model_name"),
    "tfidf": ("TfIdfAug", (), (), "model_path"),
}
KINDS = tuple(_OFFLINE) + ("synonym",) + tuple(_NEEDS_RESOURCES)
_GLOBAL_RNG_LOCK = threading.Lock()


class NlpAug:
    """One nlpaug augmenter (or our synonym op) with per-(seed, sample_id, copy) seeding.

    Call it on a str (-> `n_aug` strings), a list of str or a batch dict (-> `augment_batch`).
    """

    def __init__(self, kind: str, seed: int = 0, n_aug: int = 1,
                 synonyms: SynonymSource | None = None, **params: Any) -> None:
        if kind not in KINDS:
            raise ShardtrainError(f"augment kind '{kind}' is unknown; expected one of: {', '.join(KINDS)}")
        self.kind, self.seed, self.n_aug = kind, int(seed), int(n_aug)
        self.params = dict(params)
        self._synonyms: CleanedSynonyms | None = None
        self._aug: Any = None
        if kind == "synonym":
            if synonyms is None:
                raise ShardtrainError("augment kind 'synonym' needs a synonym source "
                                      "(shardtrain.augment.synonyms: oewn)")
            if set(params) - {"aug_p"}:
                raise ShardtrainError(f"augment kind 'synonym' takes only aug_p, got {sorted(params)}")
            self._synonyms = CleanedSynonyms(synonyms)
            self._aug_p = float(params.get("aug_p", 0.1))
        else:
            self._aug = _build_nlpaug(kind, self.params)

    def __call__(self, data: Any, sample_id: int = 0) -> Any:
        """Augment a str, a list of str (row i has id i) or a batch dict."""
        if isinstance(data, str):
            return self.augment(data, sample_id)
        if isinstance(data, dict):
            return self.augment_batch(data)
        return [self.augment(text, i) for i, text in enumerate(data)]

    def augment(self, text: str, sample_id: int = 0) -> list[str]:
        """Return the `n_aug` copies (1..n_aug) of `text` for row `sample_id`."""
        return [self._one(text, sample_id, c) for c in range(1, self.n_aug + 1)]

    def augment_batch(self, batch: dict[str, Any], text_col: str = "text", id_col: str = "sample_id",
                      include_original: bool = True) -> dict[str, Any]:
        """Expand a batch like `EDA.augment_batch` (original + copies, source_id, aug_index)."""
        texts = texts_of(batch, text_col)
        ids = ids_of(batch, id_col, len(texts))
        copies = [self.augment(t, s) for t, s in zip(texts, ids.tolist())]
        return expand_batch(batch, copies, texts, text_col, id_col, include_original)

    def _one(self, text: str, sample_id: int, copy: int) -> str:
        """Augment one copy with the global RNGs seeded from stream (seed, sample_id, copy)."""
        if self._synonyms is not None:
            return _synonym_tokens(text, self._aug_p, self._synonyms, self.seed, sample_id, copy)
        py_seed, np_seed = (copy_uniforms(self.seed, sample_id, copy, [2]) * 2**32).astype(np.int64).tolist()
        with _GLOBAL_RNG_LOCK:
            py_state, np_state = random.getstate(), np.random.get_state()
            try:
                random.seed(py_seed)
                np.random.seed(np_seed)
                out = self._aug.augment(text, n=1, num_thread=1)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        if isinstance(out, list):  # nlpaug >= 1.1.11 returns a list; [] when it had nothing to do
            out = out[0] if out else text
        return out


def _synonym_tokens(text: str, aug_p: float, synonyms: CleanedSynonyms, seed: int,
                    sample_id: int, copy: int) -> str:
    """Replace up to max(1, int(aug_p * tokens)) distinct alphabetic non-stop whitespace tokens
    (matched lowercased) by a random synonym; every other token (digits, punctuation, case of
    untouched words) stays as it was. Draws like `shardtrain.augment.eda.apply_sr`."""
    tokens = text.split()
    keys = [t.lower() if t.isascii() and t.isalpha() else "" for t in tokens]
    cands = [k for k in dict.fromkeys(keys) if k and k not in STOP_WORDS and synonyms.synonyms(k)]
    if not cands:
        return text
    m = min(max(1, int(aug_p * len(tokens))), len(cands))
    u = copy_uniforms(seed, sample_id, copy, [len(cands) + m]).tolist()
    repl = {}
    for i, j in enumerate(sorted(range(len(cands)), key=u.__getitem__)[:m]):
        syns = synonyms.synonyms(cands[j])
        repl[cands[j]] = syns[int(u[len(cands) + i] * len(syns))]
    out = []
    for tok, key in zip(tokens, keys):
        new = repl.get(key)
        out.append(tok if new is None else (new[:1].upper() + new[1:] if tok[0].isupper() else new))
    return " ".join(out)


def _build_nlpaug(kind: str, params: dict[str, Any]) -> Any:
    """Construct the nlpaug augmenter for `kind`, or raise naming the missing resource."""
    if kind in _NEEDS_RESOURCES:
        _check_resources(kind, params)
        module, cls = "nlpaug.augmenter.word", _NEEDS_RESOURCES[kind][0]
    else:
        module, cls = _OFFLINE[kind]
    if kind == "spelling":
        res = Path(importlib.util.find_spec("nlpaug").origin).parent / "res" / "word" / "spelling"
        dict_path = Path(params.setdefault("dict_path", str(res / "spelling_en.txt")))
        if not dict_path.is_file():
            raise ShardtrainError(f"augment kind 'spelling' needs the misspelling dictionary {dict_path} "
                                  f"(nlpaug's res/word/spelling/spelling_en.txt); it is missing")
    try:
        aug = getattr(importlib.import_module(module), cls)(**params)
    except TypeError as exc:
        raise ShardtrainError(f"augment kind '{kind}': bad parameters {sorted(params)}: {exc}") from None
    if kind == "spelling" and getattr(aug.model, "dict_path", None) != params["dict_path"]:
        aug.model = aug.get_model(force_reload=True)  # nlpaug caches the first dictionary globally
    return aug


def _check_resources(kind: str, params: dict[str, Any]) -> None:
    """Raise a `ShardtrainError` naming the first resource `kind` needs that is not installed."""
    cls, modules, nltk_resources, path_arg = _NEEDS_RESOURCES[kind]
    for mod in modules:
        if importlib.util.find_spec(mod) is None:
            raise ShardtrainError(f"augment kind '{kind}' (nlpaug {cls}) needs the python package "
                                  f"'{mod}', which is not installed; nothing is downloaded at run time")
    if nltk_resources:
        import nltk

        for res in nltk_resources:
            try:
                nltk.data.find(res)
            except LookupError:
                raise ShardtrainError(f"augment kind '{kind}' (nlpaug {cls}) needs NLTK resource '{res}', "
                                      f"which is not installed (nlpaug would download it); use kind "
                                      f"'synonym' with synonyms: oewn instead") from None
    if path_arg is not None:
        value = params.get(path_arg)
        if value is None or not os.path.exists(value):
            raise ShardtrainError(f"augment kind '{kind}' (nlpaug {cls}) needs a local model at "
                                  f"{path_arg}={value!r}; none found and nothing is downloaded at run time")

"""Text augmentation for shardtrain: EDA, synonym sources and seeded nlpaug wrappers.

Importing this module imports neither Ray nor nlpaug (nlpaug loads when an `NlpAug` is built).

    from shardtrain.augment.text import EDA, load_synonyms
    eda = EDA(synonyms=load_synonyms("oewn", data_dir), seed=0, n_aug=4)
    eda("Free entry in 2 a wkly comp to win FA Cup final tkts")  # -> 4 strings
    eda.augment_batch({"sample_id": ids, "text": texts, "label": labels})  # Ray batch

`TextAugmentStage` is the callable class handed to ``Dataset.map_batches`` (it loads the
synonym table once per worker); `augment_text` is the same as a plain function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from shardtrain.augment._textbatch import AUG_ID_SHIFT, copy_uniforms
from shardtrain.augment.eda import (EDA, OPERATIONS, STOP_WORDS, CleanedSynonyms, apply_rd, apply_ri, apply_rs,
                         apply_sr, clean_text, draws_needed, random_deletion, random_insertion,
                         random_swap, synonym_replacement)
from shardtrain.augment.nlp import KINDS as NLPAUG_KINDS
from shardtrain.augment.nlp import NlpAug
from shardtrain.augment.synonyms import (DictSynonyms, NLTKWordNetSynonyms, OEWNSynonyms, SynonymSource,
                              load_synonyms, read_synonym_dict)
from shardtrain.core.errors import ShardtrainError
from shardtrain.core.validation import Fraction

__all__ = [
    "apply_rd", "apply_ri", "apply_rs", "apply_sr", "AUG_ID_SHIFT", "augment_text",
    "build_text_augmenter", "clean_text", "CleanedSynonyms", "copy_uniforms", "DictSynonyms",
    "draws_needed", "EDA", "load_synonyms", "NlpAug", "NLPAUG_KINDS", "NLTKWordNetSynonyms",
    "OEWNSynonyms", "OPERATIONS", "random_deletion", "random_insertion", "random_swap",
    "read_synonym_dict", "STOP_WORDS", "synonym_replacement", "SynonymSource", "TextAugmentConfig",
    "TextAugmentStage",
]


@dataclass(frozen=True)
class TextAugmentConfig:
    """How the text augment stage expands each training row (``augment.text`` in the config).

    `method` is "eda" or one of `NLPAUG_KINDS` (then `params` go to that augmenter). The
    number of copies per row is the stage's (``augment.copies``, the EDA paper's n_aug:
    4 with alpha 0.1 for ~5,000 training sentences, 16 with alpha 0.05 for 500);
    `include_original` keeps the untouched row as aug_index 0. `synonyms` is "oewn"
    (Open English WordNet, located like a dataset), "nltk", a dictionary path, or None.
    """

    __pydantic_config__ = {"extra": "forbid"}  # validated by shardtrain.config; unknown keys are errors

    method: str = "eda"
    alpha_sr: Fraction = 0.1
    alpha_ri: Fraction = 0.1
    alpha_rs: Fraction = 0.1
    p_rd: Fraction = 0.1
    synonyms: str | None = "oewn"
    include_original: bool = True
    text_col: str = "text"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an unknown method when the config is built, not when the stage starts."""
        if self.method != "eda" and self.method not in NLPAUG_KINDS:
            raise ShardtrainError(f"config key 'augment.text.method': {self.method!r} is unknown; expected 'eda' "
                                  f"or one of {', '.join(NLPAUG_KINDS)}")

def build_text_augmenter(cfg: TextAugmentConfig, seed: int,
                         data_dir: str | os.PathLike[str] | None = None,
                         n_aug: int = 4) -> EDA | NlpAug:
    """Build the augmenter `cfg` describes (loading its synonym source) for `seed`, `n_aug` copies per row.

    Reads only alpha_*/p_rd/synonyms when `cfg` lacks the other fields (method defaults to
    "eda"), so an object holding just the EDA parameters works."""
    method = getattr(cfg, "method", "eda")
    copies = int(n_aug)
    if method == "eda":
        source = load_synonyms(cfg.synonyms, data_dir)
        return EDA(cfg.alpha_sr, cfg.alpha_ri, cfg.alpha_rs, cfg.p_rd, copies, source, seed)
    if method in NLPAUG_KINDS:
        source = load_synonyms(cfg.synonyms, data_dir) if method == "synonym" else None
        return NlpAug(method, seed=seed, n_aug=copies, synonyms=source, **getattr(cfg, "params", {}))
    raise ShardtrainError(f"augment.method: '{method}' is unknown; expected eda or one of "
                          f"{', '.join(NLPAUG_KINDS)}")


class TextAugmentStage:
    """``map_batches`` callable: builds the augmenter once (per Ray actor), then expands batches."""

    def __init__(self, cfg: TextAugmentConfig, seed: int,
                 data_dir: str | os.PathLike[str] | None = None, n_aug: int = 4) -> None:
        self.text_col = getattr(cfg, "text_col", "text")
        self.include_original = getattr(cfg, "include_original", True)
        self.augmenter = build_text_augmenter(cfg, seed, data_dir, n_aug)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return the batch with each row followed by its augmented copies."""
        return self.augmenter.augment_batch(batch, text_col=self.text_col,
                                            include_original=self.include_original)


def augment_text(batch: dict[str, Any], cfg: TextAugmentConfig, seed: int,
                 data_dir: str | os.PathLike[str] | None = None, n_aug: int = 4) -> dict[str, Any]:
    """Stage function form of `TextAugmentStage` (the synonym table is cached per process)."""
    return TextAugmentStage(cfg, seed, data_dir, n_aug)(batch)

"""Text dataset kinds: the SMS Spam Collection (any delimited text/label file via ``options.path``).

The reader (``shardtrain.readers.text``) takes its own ``TextReaderOptions``, which are
this kind's options; the stage functions live in ``shardtrain.stages.text``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import RESOURCES, SMS_SPAM_FILES, file_fingerprint, locate
from shardtrain.readers.text import TextReaderOptions
from shardtrain.stages import text as stage

if TYPE_CHECKING:
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.readers.text import TextTable
    from shardtrain.stages.runner import SplitJob

_DEFAULT_PATH = TextReaderOptions.path


@register
class SmsSpam(Dataset):
    """SMS Spam Collection v.1 (UCI 228): 5,574 messages, ham/spam.

    ``options.path`` left at its default is located through the registry (``--data-dir``,
    ``$SHARDTRAIN_DATA``, the cache); any other path reads that file instead.
    """

    modality: ClassVar[str] = "text"
    augmentable: ClassVar[bool] = True
    description: ClassVar[str] = "SMS Spam Collection v.1 (UCI 228): 5,574 messages, ham/spam"
    name: Literal["sms-spam"] = "sms-spam"
    options: TextReaderOptions = TextReaderOptions()

    def plan(self, cfg: Config) -> PreparePlan:
        """Locate the text file and fingerprint it."""
        opts = self.options
        if opts.path == _DEFAULT_PATH:
            path = locate(SMS_SPAM_FILES, self.data_dir)["SMSSpamCollection"]
        else:
            path = Path(opts.path)
            if not path.is_absolute() and self.data_dir:
                path = Path(self.data_dir) / path
        if not path.is_file():
            raise ShardtrainError(f"{path}: text file not found")
        return PreparePlan(("train", "val", "test"), (file_fingerprint(path),), {"text": path},
                           dataclasses.replace(opts, path=str(path)))

    def _read(self, cfg: Config, plan: PreparePlan) -> TextTable:
        """Read and split the whole file (cheap: a few MB at most)."""
        from shardtrain.readers.text import read_text

        return read_text(plan.reader, self.data_dir, seed=cfg.seed)

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """One job per split: text -> hashed n-grams."""
        return stage.prepare_jobs(cfg, self._read(cfg, plan), self.options.split)

    def augment_jobs(self, cfg: Config, prepare_dir: Path) -> list[SplitJob]:
        """The training split -> originals + EDA copies -> hashed n-grams."""
        text_cfg = dataclasses.replace(cfg.augment.text, synonyms=self._synonyms_path(cfg))
        return stage.augment_jobs(cfg, self._read(cfg, self.plan(cfg)), self.options.split, text_cfg)

    def resources(self, cfg: Config) -> dict[str, Path]:
        """The OEWN synonym table when ``augment.text.synonyms`` is ``oewn`` (located like a dataset)."""
        if cfg.augment.text.synonyms != "oewn":
            return {}
        return {"synonyms": locate(RESOURCES["oewn-2025"], self.data_dir)["oewn-2025-synsets.tsv.gz"]}

    def _synonyms_path(self, cfg: Config) -> str | None:
        """Resolve ``augment.text.synonyms: oewn`` through the resource registry; pass others through."""
        found = self.resources(cfg)
        return str(found["synonyms"]) if found else cfg.augment.text.synonyms

"""The ``kdd99`` dataset kind: KDD Cup 1999 connection records (stage functions in ``shardtrain.stages.kdd99``).

There is no augment stage: there is no meaningful label-preserving transform of
connection features.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import KDD99_FILES, file_fingerprint, locate
from shardtrain.readers.kdd99 import Kdd99Options
from shardtrain.stages import kdd99 as stage

if TYPE_CHECKING:
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.stages.runner import SplitJob


@register
class Kdd99(Dataset):
    """KDD Cup 1999 connection records: the 10% training file and the labelled 'corrected' test set."""

    description: ClassVar[str] = ("KDD Cup 1999 connection records: 10% training file and the labelled "
                                  "'corrected' test set")
    name: Literal["kdd99"] = "kdd99"
    options: Kdd99Options = Kdd99Options()

    def plan(self, cfg: Config) -> PreparePlan:
        """Locate the three files and fingerprint them."""
        files = locate(KDD99_FILES, self.data_dir)
        return PreparePlan(("train", "val", "test"), tuple(sorted(file_fingerprint(p) for p in files.values())),
                           files, self.options)

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """Read both files columnar and featurise them in the driver."""
        f = plan.files
        return stage.kdd99_jobs(f["kddcup.data_10_percent.gz"], f["corrected.gz"], f["training_attack_types"],
                                plan.reader, cfg.seed)

    def predict_job(self, cfg: Config, fitted: dict[str, Any], path: Path) -> SplitJob:
        """A KDD-format CSV (with its label field) encoded with the training split's vocabularies and statistics."""
        path = Path(path)
        if not path.is_file():
            raise ShardtrainError(f"--input {path}: no such file")
        return stage.kdd99_predict_job(path, self.options, fitted)

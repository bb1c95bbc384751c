"""Connection dataset kinds: KDD Cup 99 records and the NASA HTTP access log.

Their options are the readers' own (``Kdd99Options``, ``HttpLogOptions`` plus a
``path`` to any Common Log Format file); the stage functions live in
``shardtrain.stages.logs``. Neither has an augment stage: there is no meaningful
label-preserving transform of connection features.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import KDD99_FILES, NASA_HTTP_FILES, file_fingerprint, locate
from shardtrain.readers.httplog import HttpLogOptions
from shardtrain.readers.kdd99 import Kdd99Options
from shardtrain.stages import logs as stage

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


@dataclass(frozen=True)
class NasaHttpOptions(HttpLogOptions):
    """The log reader's options plus ``path``: any Common Log Format file instead of the registry's excerpt."""

    path: str | None = None

    def reader(self) -> HttpLogOptions:
        """The reader's own options (without ``path``)."""
        return HttpLogOptions(**{f.name: getattr(self, f.name) for f in fields(HttpLogOptions)})


@register
class NasaHttp(Dataset):
    """NASA Kennedy Space Center HTTP access log (Common Log Format), August 1995 excerpt."""

    description: ClassVar[str] = "NASA Kennedy Space Center HTTP access log (Common Log Format), August 1995 excerpt"
    name: Literal["nasa-http"] = "nasa-http"
    options: NasaHttpOptions = NasaHttpOptions()

    def plan(self, cfg: Config) -> PreparePlan:
        """Locate the log (or take ``options.path``) and fingerprint it."""
        if self.options.path:
            log_path = Path(self.options.path)
        else:
            log_path = locate(NASA_HTTP_FILES, self.data_dir)["NASA_access_log_Aug95.first20000.log"]
        if not log_path.is_file():
            raise ShardtrainError(f"{log_path}: log file not found")
        return PreparePlan(("train", "val", "test"), (file_fingerprint(log_path),), {"log": log_path},
                           self.options.reader())

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """Parse (on Ray workers with ``executor='ray'``), sessionise and featurise the log."""
        return stage.http_jobs(plan.files["log"], plan.reader, cfg.seed, executor)

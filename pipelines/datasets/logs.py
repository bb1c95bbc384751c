"""Web-server access-log dataset kinds (KDD Cup 99 is ``shardtrain.datasets.kdd99``).

``http-log`` reads any Common or Combined Log Format log (``options.path``: a file, glob
or directory; ``options.test_path``: a second log as the test split); ``nasa-http`` is
``http-log`` with the registry's NASA excerpt as its default path. Their options are
the reader's own (``HttpLogOptions`` plus the paths); the stage functions live in
``shardtrain.stages.logs``. There is no augment stage: there is no meaningful
label-preserving transform of connection features.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator

from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import NASA_HTTP_FILES, file_fingerprint, locate
from shardtrain.readers.httplog import HttpLogOptions
from shardtrain.shards import storage
from shardtrain.shards.blocks import BLOCK_BYTES
from shardtrain.stages import logs as stage

if TYPE_CHECKING:
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.stages.runner import SplitJob


@dataclass(frozen=True)
class HttpLogKindOptions(HttpLogOptions):
    """The log reader's options plus where the log is.

    ``path``: a file, a glob (``logs/access.log*``) or a directory (every file in it,
    sorted by name); ``.gz`` files are read as they are. ``test_path`` (same forms): a
    second log that is the test split; the first is then cut into train and val only, in
    the ratio of ``split_fractions``' first two numbers.
    """

    path: str | None = None
    test_path: str | None = None

    def reader(self) -> HttpLogOptions:
        """The reader's own options (without the paths)."""
        return HttpLogOptions(**{f.name: getattr(self, f.name) for f in fields(HttpLogOptions)})


NasaHttpOptions = HttpLogKindOptions  # the name older code imported


def log_files(pattern: storage.Location, key: str = "config key 'dataset.options.path'") -> list[str]:
    """The files a ``path`` option names: the file, the glob's matches or the directory's files, sorted.

    Local paths (``~`` expanded) and URIs (``s3://bucket/logs/*.log``) alike, through
    ``storage.expand``; URIs stay strings. ``key`` is how errors name where the pattern
    came from (a config key, ``--input``).
    """
    text = str(pattern)
    if not storage.is_uri(text):
        text = str(Path(text).expanduser())
    files = storage.expand(text)
    if files:
        return files
    if any(ch in text for ch in "*?["):
        raise ShardtrainError(f"{key}: {storage.redact(str(pattern))} matches no file")
    if storage.exists(text):
        raise ShardtrainError(f"{key}: {storage.redact(str(pattern))} is an empty directory")
    raise ShardtrainError(f"{key}: {storage.redact(str(pattern))}: log file not found")


@register
class HttpLog(Dataset):
    """Any web-server access log in Common or Combined Log Format, sessionised into connections.

    Multitask: ``label_error`` (a 4xx/5xx after the first ``first_k`` requests) and
    ``label_long`` (more than ``long_n`` requests), from features of the first requests.
    """

    description: ClassVar[str] = ("a web-server access log (Common/Combined Log Format) sessionised into "
                                  "connections; multitask: a later error, a long connection")
    # Two label columns: the multitask model is the one that trains on them.
    recipe: ClassVar[dict] = {"model": {"kind": "multitask", "hidden": [64, 32], "dropout": 0.1},
                              "prepare": {"rows_per_shard": 1000},
                              "train": {"max_epochs": 20, "optimizer": "adamw", "lr": 0.003, "schedule": "onecycle"}}
    name: Literal["http-log"] = "http-log"
    options: HttpLogKindOptions = HttpLogKindOptions()

    @model_validator(mode="after")
    def _needs_path(self) -> HttpLog:
        """``http-log`` has no default file: ``options.path`` is required (checked at load)."""
        if self.name == "http-log" and not self.options.path:
            raise ShardtrainError("config key 'dataset.options.path': http-log needs the log to read "
                             "(a file, a glob or a directory)")
        if self.options.test_path and sum(self.options.split_fractions[:2]) <= 0:
            raise ShardtrainError("config key 'dataset.options.split_fractions': with test_path the first two "
                             "(train, val) must not both be 0")
        return self

    def _log_paths(self) -> list[storage.Location]:
        """The training log's files (``nasa-http`` falls back to the registry's excerpt)."""
        return log_files(self.options.path)

    def plan(self, cfg: Config) -> PreparePlan:
        """Locate the log's files (and the test log's) and fingerprint them."""
        logs = self._log_paths()
        tests = log_files(self.options.test_path, "config key 'dataset.options.test_path'") if self.options.test_path else []
        inputs = tuple(file_fingerprint(p) for p in logs) + tuple(f"test:{file_fingerprint(p)}" for p in tests)
        files = {f"log:{i}": p for i, p in enumerate(logs)} | {f"test:{i}": p for i, p in enumerate(tests)}
        return PreparePlan(("train", "val", "test"), inputs, files, self.options.reader())

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """Parse, sessionise and featurise the log as two shuffles (Ray tasks with ``executor='ray'``)."""
        logs = [p for k, p in plan.files.items() if k.startswith("log:")]
        tests = [p for k, p in plan.files.items() if k.startswith("test:")]
        return stage.http_jobs(logs, plan.reader, cfg.seed, executor, tests or None,
                               cfg.prepare.block_bytes, cfg.prepare.shuffle_partitions)

    def predict_job(self, cfg: Config, fitted: dict[str, Any], path: storage.Location) -> SplitJob:
        """A new log (file, glob or directory) as the run's connections, standardised with train's statistics.

        Labels come from the new log itself (forward-looking, as in prepare); a
        connection whose outcome the log does not show gets -1. Connections near the log's
        end are kept (prepare drops them from training).
        """
        return stage.http_predict_job(log_files(path, "--input"), self.options.reader(), fitted,
                                      block_bytes=cfg.prepare.block_bytes if cfg is not None else BLOCK_BYTES)


@register
class NasaHttp(HttpLog):
    """``http-log`` over the NASA Kennedy Space Center access log (August 1995 excerpt) from the registry.

    ``options.path`` may still name another log; without it the registry's file is
    located (``--data-dir``, ``$SHARDTRAIN_DATA``, the user cache).
    """

    description: ClassVar[str] = "NASA Kennedy Space Center HTTP access log (Common Log Format), August 1995 excerpt"
    name: Literal["nasa-http"] = "nasa-http"  # type: ignore[assignment]

    def _log_paths(self) -> list[storage.Location]:
        """``options.path`` when given, else the registry's NASA excerpt."""
        if self.options.path:
            return log_files(self.options.path)
        return [locate(NASA_HTTP_FILES, self.data_dir)["NASA_access_log_Aug95.first20000.log"]]

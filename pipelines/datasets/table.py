"""The generic ``table`` dataset kind: a user's own CSV, Parquet, JSON Lines or Arrow/Feather table.

Options are ``shardtrain.readers.table.TableOptions``; the split, the rejects, the
transform fitted on the training split and the per-shard encoding live in
``shardtrain.stages.table``. The fitted transform is stored in every split's index
(``transform``), and ``predict_job`` re-applies it to new files without refitting.
There is no augment stage (no label-preserving transform of tabular rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import file_fingerprint
from shardtrain.readers.table import TableOptions, check_columns, column_names, required_columns, resolve_files
from shardtrain.stages import table as stage

if TYPE_CHECKING:
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.stages.runner import SplitJob

_ROLES = ("path", "val_path", "test_path")


@register
class Table(Dataset):
    """A user's table: one row per sample, one label column, numeric and categorical feature columns.

    ``recipe``: one hidden layer of 64 with dropout 0.2, AdamW (lr 1e-2, weight decay 0.1)
    on a one-cycle schedule for 30 epochs, and the checkpoint picked by validation loss:
    tables are small, so the model is small and regularised, and on a validation split of a
    few dozen rows the accuracy ties early while the loss still tells epochs apart
    (measured against logistic and ridge regression on scikit-learn's wine, breast cancer
    and diabetes tables; the README's table section has the numbers).
    """

    description: ClassVar[str] = "your own table: CSV, Parquet, JSON Lines or Arrow/Feather (options.path)"
    recipe: ClassVar[dict[str, Any]] = {
        "model": {"kind": "mlp", "hidden": [64], "dropout": 0.2},
        "train": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1, "schedule": "onecycle", "max_epochs": 30,
                  "monitor": "val_loss"},
    }
    name: Literal["table"] = "table"
    options: TableOptions

    def _files(self) -> dict[str, tuple[list[str], str]]:
        """The files of each role given (``path``, ``val_path``, ``test_path``; paths or URIs) and their format."""
        opts = self.options
        return {role: resolve_files(getattr(opts, role), self.data_dir, opts.format, role)
                for role in _ROLES if getattr(opts, role)}

    def plan(self, cfg: Config) -> PreparePlan:
        """Locate every input file and fingerprint it (a missing file fails here, before any output)."""
        roles = self._files()
        for role, (files, fmt) in roles.items():  # a missing column fails here, before any output
            for f in files:
                check_columns(f, column_names(f, fmt, self.options), required_columns(self.options, role))
        inputs = tuple(f"{role}:{file_fingerprint(f)}" for role, (files, _) in roles.items() for f in files)
        located = {f"{role}:{i}": f for role, (files, _) in roles.items() for i, f in enumerate(files)}
        return PreparePlan(("train", "val", "test"), inputs, located, self.options)

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """Plan parts and merge the passes' summaries in the driver; each shard task reads and encodes its rows."""
        return stage.prepare_jobs(self.options, self._files(), cfg.seed, executor, cfg.prepare.block_bytes)

    def predict_job(self, cfg: Config, fitted: dict[str, Any], path: Path | str) -> SplitJob:
        """New rows at ``path`` (a file, glob or directory; a path or a URI) -> features under the run's fitted transform."""
        transform = fitted.get("transform")
        if not transform or transform.get("kind") != "table":
            raise ShardtrainError("the run's training index has no table transform (prepare it again with this "
                                  "shardtrain version)")
        files, fmt = resolve_files(str(path), self.data_dir, self.options.format, "path")
        return stage.predict_job(self.options, transform, files, fmt)

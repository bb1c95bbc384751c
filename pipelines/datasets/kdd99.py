"""The ``kdd99`` dataset kind: KDD Cup 1999 connection records (stage functions in ``shardtrain.stages.kdd99``).

There is no augment stage: there is no meaningful label-preserving transform of
connection features.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from shardtrain.core.errors import ShardtrainError
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import KDD99_FILES, file_fingerprint, locate
from shardtrain.readers.kdd99 import Kdd99Options
from shardtrain.shards import storage
from shardtrain.stages import kdd99 as stage

TRAIN, TEST, TYPES = "kddcup.data_10_percent.gz", "corrected.gz", "training_attack_types"

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
        """Locate the registry files (or expand ``train_path`` / ``test_path``) and fingerprint them."""
        opts = self.options
        paths = {"train": opts.train_path, "test": opts.test_path}
        spec = KDD99_FILES
        if opts.train_path and opts.test_path:  # only the attack types still come from the registry
            spec = dataclasses.replace(spec, files=tuple(f for f in spec.files if f.name == TYPES))
        found = locate(spec, self.data_dir)
        files: dict[str, Any] = {TYPES: found[TYPES]}
        inputs = []
        for role, default in (("train", TRAIN), ("test", TEST)):
            if paths[role]:
                files[role] = storage.expand(paths[role])
                if not files[role]:
                    raise ShardtrainError(f"config key 'dataset.options.{role}_path': "
                                          f"{storage.redact(paths[role])} matches no file")
                inputs += [f"{role}{i}:{file_fingerprint(p)}" for i, p in enumerate(files[role])]
            else:
                files[role] = [found[default]]
                inputs.append(file_fingerprint(found[default]))
        inputs.append(file_fingerprint(found[TYPES]))
        # The registry-only plan keeps its previous fingerprint (sorted file fingerprints).
        inputs = sorted(inputs) if not (opts.train_path or opts.test_path) else inputs
        return PreparePlan(("train", "val", "test"), tuple(inputs), files, opts)

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """Plan both inputs in blocks; the passes and the shard tasks read them (see ``stages.kdd99``)."""
        f = plan.files
        return stage.kdd99_jobs(f["train"], f["test"], f[TYPES], plan.reader, cfg.seed, executor,
                                cfg.prepare.block_bytes)

    def predict_job(self, cfg: Config, fitted: dict[str, Any], path: storage.Location) -> SplitJob:
        """A KDD-format CSV (with its label field; a path or a URI) encoded with the training split's transform."""
        if not storage.is_uri(path):
            path = Path(path)
        if storage.file_size(path) is None:
            raise ShardtrainError(f"--input {storage.redact(path)}: no such file")
        return stage.kdd99_predict_job(path, self.options, fitted)


"""The dataset protocol: one registered class per dataset kind, with its typed options.

A dataset kind is a frozen pydantic model (it is the ``dataset`` section of the
config when ``dataset.name`` names it) that also knows how to plan its stages:

    @register
    class Kdd99(Dataset):
        name: Literal["kdd99"] = "kdd99"
        options: Kdd99Options = Kdd99Options()
        modality: ClassVar[str] = "table"
        def plan(self, cfg) -> PreparePlan: ...          # locate + fingerprint, cheap
        def prepare_jobs(self, cfg, plan, executor) -> list[SplitJob]: ...
        def augment_jobs(self, cfg, prepare_dir) -> list[SplitJob]: ...

``predict_job`` turns new raw data into the same features for ``shardtrain predict``,
from what the training split's index recorded (``transform``: whatever the kind fitted
on the training split). ``recipe`` holds the kind's default config values.

``plan`` returns a typed :class:`PreparePlan` (which splits, the identity of the
inputs, the located files and the reader's resolved options); the stage runner
consumes the :class:`~shardtrain.stages.runner.SplitJob` list the dataset builds from
it. Resources (files a stage needs that are not labelled data) live in
``shardtrain.datasets.files.RESOURCES`` and can never be a ``dataset.name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from shardtrain.core.errors import ShardtrainError
from shardtrain.stages.context import PreparePlan
from shardtrain.stages.context import StageConfig as Config
from shardtrain.stages.runner import SplitJob

__all__ = ["DATASETS", "Dataset", "PreparePlan", "register"]


class Dataset(BaseModel):
    """Base of every dataset kind: the ``dataset`` config section plus how to plan its stages.

    Subclasses set ``name`` (a one-value Literal, the union tag), ``options`` (their
    typed options), ``modality`` (``image``, ``text`` or ``table``: which prepare and
    augment keys apply) and ``augmentable`` (whether an augment stage exists).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    modality: ClassVar[str] = "table"
    augmentable: ClassVar[bool] = False
    description: ClassVar[str] = ""
    # The kind's default recipe: raw config sections merged *under* a config naming this
    # kind (anything the config sets wins), e.g. ``{"model": {"hidden": [256]}}``.
    recipe: ClassVar[dict[str, Any]] = {}

    name: str
    data_dir: str | None = None

    def plan(self, cfg: Config) -> PreparePlan:
        """Locate and fingerprint the raw inputs (cheap: nothing is decoded)."""
        raise NotImplementedError

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """The prepare stage's split jobs for ``plan`` (``executor`` is ``local`` or ``ray``)."""
        raise NotImplementedError

    def augment_jobs(self, cfg: Config, prepare_dir: Path) -> list[SplitJob]:
        """The augment stage's jobs (only the training split is ever augmented)."""
        raise ShardtrainError(f"dataset {self.name}: the augment stage is not defined for {self.modality} data "
                              "(set augment.copies: 0)")

    def resources(self, cfg: Config) -> dict[str, Path]:
        """Locate the resources the augment stage will need (so a missing one fails before any output)."""
        return {}

    def after_augment(self, cfg: Config, target: Path, indexes: dict[str, Any]) -> None:
        """Hook run after the augment stage wrote its shards (previews); nothing by default."""

    def predict_job(self, cfg: Config, fitted: dict[str, Any], path: str | Path) -> SplitJob:
        """The job that turns new raw data at ``path`` into the run's features, as split ``predict``.

        ``fitted`` is the run's prepare index of the training split: its ``features``,
        ``labels`` (the class vocabularies) and ``transform`` (what the kind fitted on the
        training split: category vocabularies, standardisation, the resolved image size).
        Nothing is refitted. Label columns are kept when the input has them, encoded with
        the fitted vocabulary (a label outside it becomes -1, which no metric counts; it
        is not a reject, the row is still predicted), so a labelled file can be scored.
        Bad rows are rejects, as in prepare.
        """
        raise ShardtrainError(f"dataset {self.name}: predict is not supported for this dataset kind")


DATASETS: dict[str, type[Dataset]] = {}
D = TypeVar("D", bound=type[Dataset])


def register(cls: D) -> D:
    """Class decorator: add a dataset kind to ``DATASETS`` under its ``name`` default."""
    name = cls.model_fields["name"].default
    if not isinstance(name, str) or name in DATASETS:
        raise TypeError(f"{cls.__name__}: a dataset kind needs a unique default name, got {name!r}")  # internal
    DATASETS[name] = cls
    return cls

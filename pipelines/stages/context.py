"""What a dataset kind and the data stages need of a config, and the typed prepare plan.

``StageConfig`` is the shape of ``shardtrain.config.Config`` as seen from the stages
(a Protocol, so this layer never imports the config module, which itself builds its
``dataset`` union from the dataset kinds that use the stages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class StageConfig(Protocol):
    """The parts of a validated ``Config`` the data stages read (``cfg.prepare.rows_per_shard``, ...)."""

    name: str
    seed: int
    dataset: Any
    prepare: Any
    augment: Any

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """The plain form of the config (what every index records)."""
        ...


@dataclass(frozen=True)
class PreparePlan:
    """What one prepare stage reads, decided before any data is read or any output is created.

    ``splits`` are the output splits; ``inputs`` identifies the raw inputs (file names,
    sizes, hashes) for the stage fingerprint; ``files`` are the located files by role;
    ``reader`` is the reader's options with every path resolved (or None).
    """

    splits: tuple[str, ...]
    inputs: tuple[Any, ...]
    files: dict[str, "Path | str"] = field(default_factory=dict)  # local Paths or URI strings
    reader: Any = None

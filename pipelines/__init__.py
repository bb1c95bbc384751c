"""shardtrain: raw data -> Arrow shards (Ray or in-process stages) -> Lightning training of MLPs.

``import shardtrain`` is cheap: it imports neither Ray nor Lightning. The entry points
load what they need when called::

    import shardtrain
    result = shardtrain.run("demo", stage="all", out="out/demo", executor="local")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Must run before ray or albumentations is imported by any of our modules (or a Ray worker).
from shardtrain.core import offline as _offline  # noqa: F401

__version__ = "0.2.0"

if TYPE_CHECKING:
    from shardtrain.data.datamodule import ShardDataModule


def run(config: Any, stage: str = "all", out: str = "shardtrain-out", overrides: list[str] | None = None,
        **kwargs: Any) -> dict[str, Any]:
    """Run the pipeline from Python, in this process: see :func:`shardtrain.api.run`."""
    from shardtrain.api import run as _run

    return _run(config, stage=stage, out=out, overrides=overrides, **kwargs)


def __getattr__(name: str) -> Any:
    """Lazy public names, so that ``import shardtrain`` loads neither Lightning nor Ray."""
    if name == "ShardDataModule":
        from shardtrain.data.datamodule import ShardDataModule

        return ShardDataModule
    raise AttributeError(f"module 'shardtrain' has no attribute {name!r}")


__all__ = ["run", "ShardDataModule", "__version__"]

"""shardtrain pipelines: config, dataset readers, stages, Arrow shards, DataModule and CLI."""

from pipelines import _offline  # noqa: F401  (must run before ray/albumentations import)

__version__ = "0.1.0"

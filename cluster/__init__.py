"""shardtrain `cluster` package."""

from pipelines import _offline  # noqa: F401  (must run before ray/albumentations import)

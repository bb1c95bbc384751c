"""shardtrain benchmarks: side-by-side measurements of ours vs a baseline (never run as tests).

    PYTHONPATH=. python -m benchmarks run [--quick] [--json FILE] [--only NAME ...] [--list]
"""

from shardtrain import _offline  # noqa: F401  (must run before ray/albumentations import)

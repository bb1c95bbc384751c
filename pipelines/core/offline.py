"""Switch off the phone-home behaviour of our dependencies before they are imported, and hold
the switches for their noise.

Every package of shardtrain imports this module first, so that albumentations never
checks for updates and Ray never sends usage statistics, whichever of our packages a
user (or a Ray worker) happens to import first.

Third-party noise (``quiet_third_party``): the ``shardtrain`` command line drops a few
known lines that say nothing about the run (Ray's token-authentication notice, Lightning's
"💡 Tip" adverts and its dataloader chatter, torch's ``LeafSpec`` deprecation raised from
inside Lightning, the Ray job client's "Uploading package" and "WebSocket closed" lines).
Each is matched by logger or warning category *and* message, never a blanket ignore. The CLI turns it on for a normal run and leaves it off with ``--debug``;
it exports ``SHARDTRAIN_QUIET_DEPS=1`` so that processes it starts (Ray workers of a local
Ray, DDP ranks) quiet themselves at import. Importing shardtrain as a library changes
nothing unless that variable is set.
"""

import logging
import os
import re
import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

QUIET_ENV = "SHARDTRAIN_QUIET_DEPS"

# (warning category, message regex): warnings we raise no action on.
NOISY_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)
# logger name -> message regexes of records dropped from exactly that logger.
NOISY_LOGS = {
    "ray._private.authentication.authentication_token_setup": (
        r"Token authentication is enabled for this Ray cluster",),
    # The job client's packaging and log-stream chatter (``submit`` says itself what it shipped).
    "ray.dashboard.modules.dashboard_sdk": (r"^Uploading package ", r"^Package \S+ already exists, skipping upload"),
    "ray.dashboard.modules.job.sdk": (r"^WebSocket closed for job ",),
    **{f"{pkg}.utilities.rank_zero": (r"💡 Tip:", r"Loading `train_dataloader` to estimate number of stepping")
       for pkg in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")},
}


class _DropKnownNoise(logging.Filter):
    """Drops a record whose message matches one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not any(p.search(message) for p in self.patterns)


_installed: list[tuple[logging.Logger, logging.Filter]] = []
_warning_filters: list[tuple] = []


def quiet_third_party() -> None:
    """Drop the known third-party noise (idempotent); ``show_third_party`` undoes it."""
    if _installed:
        return
    for category, message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
        _warning_filters.append(warnings.filters[0])
    for name, patterns in NOISY_LOGS.items():
        logger = logging.getLogger(name)
        flt = _DropKnownNoise(patterns)
        logger.addFilter(flt)
        _installed.append((logger, flt))


def show_third_party() -> None:
    """Undo ``quiet_third_party``: every third-party line shows again (``--debug``)."""
    for logger, flt in _installed:
        logger.removeFilter(flt)
    _installed.clear()
    for entry in _warning_filters:
        if entry in warnings.filters:
            warnings.filters.remove(entry)
    _warning_filters.clear()
    mutated = getattr(warnings, "_filters_mutated", None)  # drop the per-module "already warned" caches
    if mutated is not None:
        mutated()


if os.environ.get(QUIET_ENV, "") not in ("", "0"):
    quiet_third_party()

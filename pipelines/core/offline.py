"""Switch off the phone-home behaviour of our dependencies before they are imported.

Every package of shardtrain imports this module first, so that albumentations never
checks for updates and Ray never sends usage statistics, whichever of our packages a
user (or a Ray worker) happens to import first.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

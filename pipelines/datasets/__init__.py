"""Datasets: one registered class per dataset kind (``DATASETS``), resources apart (``RESOURCES``).

``shardtrain.datasets.base`` defines the protocol, ``files`` where raw files are found
(``--data-dir``, then ``$SHARDTRAIN_DATA``, then the user cache; downloaded, checksum
verified, only when missing and allowed), and ``images``/``kdd99``/``logs``/``table``/``text`` the kinds.
Importing this package registers every kind; nothing is read or downloaded at import.
"""

from shardtrain.datasets.base import DATASETS, Dataset, PreparePlan, register
from shardtrain.datasets.files import (FILES, RESOURCES, FileSet, FileSpec, cache_dir, file_fingerprint, file_set, locate,
                                      search_roots)
from shardtrain.datasets import images, kdd99, logs, table, text  # noqa: F401  (registers the kinds, in listing order)

__all__ = ["DATASETS", "FILES", "RESOURCES", "Dataset", "FileSet", "FileSpec", "PreparePlan", "cache_dir",
           "file_fingerprint", "file_set", "locate", "register", "search_roots"]

"""Raw files of datasets and resources: names, checksums, download URLs, and where they are found.

Files are looked for in ``--data-dir`` (or ``dataset.data_dir``), then
``$SHARDTRAIN_DATA``, then the user cache (``$XDG_CACHE_HOME/shardtrain``), each
both in ``<root>/<subdir>/`` and directly in ``<root>/``. They are downloaded (and
their checksum verified) only when missing everywhere and a URL is known; nothing is
ever downloaded at import time, and ``SHARDTRAIN_OFFLINE=1`` forbids downloads.

A data dir (and ``$SHARDTRAIN_DATA``) may be a URI (``s3://bucket/data``): the same
layouts are looked up on the store (one listing per candidate folder), and a file found
there comes back as a URI string (a ``storage.Location``; local files stay ``Path``), so
the tasks read it straight from the store. Downloads only ever go to the local cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.hashing import file_digest
from shardtrain.shards import storage
from shardtrain.shards.storage import Location


@dataclass(frozen=True)
class FileSpec:
    """One raw file of a dataset: its name, a checksum of the published file, and URLs.

    ``checksum`` is ``"sha256:<hex>"`` or ``"md5:<hex>"`` of the file as published; it
    is checked on download. ``alternatives`` are other accepted names for the same
    content (e.g. an uncompressed IDX file beside the ``.gz`` one).
    """

    name: str
    checksum: str | None = None
    urls: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileSet:
    """The raw files of one dataset or resource and where to look for them.

    ``subdir`` is the folder under each search root (``""``: the root itself);
    ``layouts`` are extra sub-directories to search (torchvision's
    ``FashionMNIST/raw`` for instance). ``description`` is one line for listings.
    """

    name: str
    subdir: str
    files: tuple[FileSpec, ...]
    layouts: tuple[str, ...] = ()
    description: str = ""


_FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_KDD = "http://kdd.ics.uci.edu/databases/kddcup99/"


def _idx_files(base: str, md5s: tuple[str, str, str, str]) -> tuple[FileSpec, ...]:
    """The four IDX files of an MNIST-like dataset (raw names accepted too)."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(FileSpec(f"{n}.gz", f"md5:{m}", (f"{base}{n}.gz",), (n,)) for n, m in zip(names, md5s))


FASHION_MNIST_FILES = FileSet(
    "fashion-mnist", "fashion-mnist",
    _idx_files(_FMNIST, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
    layouts=("FashionMNIST/raw",))
MNIST_FILES = FileSet(
    "mnist", "mnist",
    _idx_files(_MNIST, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    layouts=("MNIST/raw",))
SMS_SPAM_FILES = FileSet(
    "sms-spam", "sms-spam",
    (FileSpec("SMSSpamCollection", "sha256:7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"),))
KDD99_FILES = FileSet(
    "kdd99", "kddcup99",
    (
        FileSpec("kddcup.data_10_percent.gz",
                 "sha256:8045aca0d84e70e622d1148d7df782496f6333bf6eb979a1b0837c42a9fd9561",
                 (f"{_KDD}kddcup.data_10_percent.gz",)),
        FileSpec("corrected.gz", None, (f"{_KDD}corrected.gz",)),
        FileSpec("training_attack_types", None, (f"{_KDD}training_attack_types",)),
    ))
NASA_HTTP_FILES = FileSet("nasa-http", "nasa-http", (FileSpec("NASA_access_log_Aug95.first20000.log"),))

# Resources are files a stage uses that are not datasets (nothing to train on): they
# are located like datasets, but ``dataset.name`` cannot name them.
RESOURCES: dict[str, FileSet] = {
    "oewn-2025": FileSet(
        "oewn-2025", "oewn-2025",
        (FileSpec("oewn-2025-synsets.tsv.gz",
                  "sha256:82aa26cee4acc0dd407c631a3d2ca8c34a60d19812f7540c224ffdd10edd6e3c"),),
        description="Open English WordNet 2025 synset table: the offline synonym source for EDA"),
}

# Every named file set, datasets and resources alike: what ``locate(name)`` looks up.
FILES: dict[str, FileSet] = {fs.name: fs for fs in (FASHION_MNIST_FILES, MNIST_FILES, SMS_SPAM_FILES, KDD99_FILES,
                                                    NASA_HTTP_FILES, *RESOURCES.values())}


def cache_dir() -> Path:
    """The user cache where downloads go: ``$XDG_CACHE_HOME/shardtrain`` or ``~/.cache/shardtrain``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shardtrain"


def _root(value: str) -> Location:
    """A search root as given: a remote URI stays a string; a local path (or ``file://``) becomes a ``Path``."""
    if storage.is_uri(value):
        local = storage.local_path(value)
        return value if local is None else local
    return Path(value).expanduser()


def search_roots(data_dir: str | None) -> list[Location]:
    """Roots in lookup order: the given data dir, ``$SHARDTRAIN_DATA``, the user cache (local or URIs)."""
    roots: list[Location] = []
    if data_dir:
        roots.append(_root(str(data_dir)))
    if os.environ.get("SHARDTRAIN_DATA"):
        roots.append(_root(os.environ["SHARDTRAIN_DATA"]))
    roots.append(cache_dir())
    return roots


def _candidate_dirs(root: Location, spec: FileSet) -> list[Location]:
    """The folders under ``root`` a file of ``spec`` may lie in, in lookup order."""
    subs = [spec.subdir] if spec.subdir else []
    subs += [""] + list(spec.layouts)
    if spec.subdir:
        subs += [f"{spec.subdir}/{layout}" for layout in spec.layouts]
    return [storage.join(root, *sub.split("/")) if sub else root for sub in subs]


def _find_in(root: Location, spec: FileSet, f: FileSpec, listings: dict[str, set[str]] | None = None
             ) -> Location | None:
    """A file (or one of its alternative names) under ``root`` in any known layout.

    A local root is probed with ``is_file``; a remote one is listed once per candidate
    folder (``listings`` caches them across the files of a set), so finding four files
    costs a handful of LIST requests, not a HEAD per candidate name.
    """
    listings = {} if listings is None else listings
    remote = not storage.is_local(root)
    for d in _candidate_dirs(root, spec):
        if remote:
            key = str(d)
            if key not in listings:
                listings[key] = set(storage.listdir(d))
            hits = [name for name in (f.name, *f.alternatives) if name in listings[key]]
            if hits:
                return storage.join(d, hits[0])
            continue
        for name in (f.name, *f.alternatives):
            if (Path(d) / name).is_file():
                return Path(d) / name
    return None


def _checksum_ok(path: Path, checksum: str | None) -> bool:
    """Compare a file against ``algo:hex``; no checksum known means accept."""
    if not checksum:
        return True
    algo, _, expected = checksum.partition(":")
    return file_digest(path, algo) == expected


def _download(spec: FileSet, f: FileSpec, dest_dir: Path) -> Path:
    """Download one file into the cache, verifying its checksum before it becomes visible."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in f.urls:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{f.name}.")
        os.close(fd)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
            if not _checksum_ok(Path(tmp), f.checksum):
                errors.append(f"{url}: checksum mismatch")
                continue
            final = dest_dir / f.name
            os.replace(tmp, final)
            return final
        except OSError as exc:
            errors.append(f"{url}: {exc}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise ShardtrainError(f"{spec.name}: could not download {f.name} ({'; '.join(errors)})")


def file_set(name: str) -> FileSet:
    """The raw files of dataset or resource ``name``, failing with the known names."""
    if name not in FILES:
        raise ShardtrainError(f"unknown dataset or resource {name!r} (known: {', '.join(FILES)})")
    return FILES[name]


def _where(root: Location, spec: FileSet) -> str:
    """A search root's folder for ``spec`` as text for messages (a URI redacted)."""
    return storage.redact(storage.join(root, spec.subdir) if spec.subdir else root)


def locate(spec: FileSet | str, data_dir: str | None = None) -> dict[str, Location]:
    """Find every file of ``spec`` (a FileSet, or a name in ``FILES``), downloading missing ones when allowed.

    Values are ``Path`` for local files and URI strings for files on a store; a missing
    file is downloaded (when it has URLs and downloads are allowed) into the local
    cache, never into a remote data dir.
    """
    spec = file_set(spec) if isinstance(spec, str) else spec
    name = spec.name
    roots = search_roots(data_dir)
    found: dict[str, Location] = {}
    listings: dict[str, set[str]] = {}
    for f in spec.files:
        for root in roots:
            path = _find_in(root, spec, f, listings)
            if path is not None:
                found[f.name] = path
                break
    missing = [f for f in spec.files if f.name not in found]
    if not missing:
        return found
    offline = os.environ.get("SHARDTRAIN_OFFLINE", "") not in ("", "0")
    if offline or not all(f.urls for f in missing):
        where = ", ".join(_where(r, spec) for r in roots)
        raise ShardtrainError(
            f"{'resource' if name in RESOURCES else 'dataset'} {name}: missing {', '.join(f.name for f in missing)} (looked in {where}; "
            f"pass --data-dir (a folder or a URI) or set SHARDTRAIN_DATA)"
        )
    for f in missing:
        found[f.name] = _download(spec, f, cache_dir() / spec.subdir)
    return found


def _remote_digest(location: Location, chunk: int = 8 << 20) -> tuple[int, str]:
    """``(size, sha256 hex)`` of an object's stored bytes, read 8 MiB at a time (never held whole).

    Not ``storage.digest``: its sequential stream decompresses ``.gz``/``.bz2`` by suffix,
    which would hash other bytes than the local ``file_digest`` of the same file.
    """
    import hashlib

    h, size = hashlib.sha256(), 0
    with storage.open_input(location) as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def file_fingerprint(path: Location) -> str:
    """A cheap identity of an input file for stage fingerprints: name, size and sha256 (16 hex digits).

    The same text for a local file and for an object on a store with the same bytes.
    A remote object is hashed in one pass of 8 MiB ranged reads (never held whole), not
    identified by its size and modification time: pyarrow's ``FileInfo`` carries no ETag,
    and an object rewritten with the same size within the store's one-second
    ``LastModified`` would keep its fingerprint, so a stale stage would look up to date.
    Reading the bytes once is what the local path costs too.
    """
    local = storage.local_path(path)
    if local is not None:
        return f"{local.name}:{local.stat().st_size}:{file_digest(local)[:16]}"
    try:
        size, sha = _remote_digest(path)
    except FileNotFoundError:
        raise ShardtrainError(f"{storage.redact(path)}: input file not found") from None
    return f"{storage.basename(path)}:{size}:{sha[:16]}"

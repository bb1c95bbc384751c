"""A local cache of remote split directories, so training memory-maps shards from local disk.

``local_split("s3://bucket/out/shards/prepare/train")`` copies the split's index and the
shards it names (nothing else under the prefix) into one cache entry and returns its
local directory; a local path or ``file://`` URI comes back as its ``Path``, untouched.

- **Key.** An entry is named by the URI without credentials and the sha256 of the index's
  bytes (which holds every shard's sha256): the same split with the same index is reused
  across runs and processes; a rewritten index is a new entry (the stale one is dropped).
- **Verified.** Every copied shard is hashed while it streams to disk and checked against
  the index; a mismatch is a ``ShardtrainError`` naming the shard, and nothing of the
  entry is kept.
- **Atomic.** An entry is filled in a temporary directory and renamed into place; when two
  processes fill the same entry, the rename of the second fails and it uses the first's.
- **Bounded.** ``max_bytes`` (or ``SHARDTRAIN_CACHE_MAX_BYTES``, e.g. ``50G``) caps the
  cache; the least recently used entries are evicted to make room, and a split larger
  than the limit is an error giving both sizes.

The cache lives in ``cache_dir``, else ``$SHARDTRAIN_CACHE``, else ``~/.cache/shardtrain/shards``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import format as fmt
from shardtrain.shards import storage

CACHE_ENV = "SHARDTRAIN_CACHE"
MAX_BYTES_ENV = "SHARDTRAIN_CACHE_MAX_BYTES"
DEFAULT_CACHE = Path("~/.cache/shardtrain/shards")
ENTRY_META = "_cache.json"  # inside an entry: source URI (redacted), index sha256, bytes; its mtime = last use
STALE_TMP_S = 24 * 3600  # a fill's temporary directory older than this belongs to a dead process
_CHUNK = 8 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: the argument, else ``$SHARDTRAIN_CACHE``, else ``~/.cache/shardtrain/shards``."""
    chosen = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


def parse_size(text: str, where: str = MAX_BYTES_ENV) -> int:
    """Bytes from ``"1048576"``, ``"512M"``, ``"50G"`` or ``"2TiB"`` (K/M/G/T are powers of 1024)."""
    match = _SIZE.match(str(text))
    if not match:
        raise ShardtrainError(f"{where}: {text!r} is not a size (bytes, or a number with K, M, G or T)")
    scale = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * scale)


def max_cache_bytes(max_bytes: int | None = None) -> int | None:
    """The size limit: the argument, else ``$SHARDTRAIN_CACHE_MAX_BYTES``, else ``None`` (no limit)."""
    if max_bytes is not None:
        return int(max_bytes)
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    return parse_size(text) if text else None


def _sha(text: str | bytes) -> str:
    """The sha256 hex digest of a string or bytes."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _meta(entry: Path) -> dict[str, Any] | None:
    """An entry's ``_cache.json``, or ``None`` when it is absent or unreadable (a broken entry)."""
    try:
        return json.loads((entry / ENTRY_META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _usable(entry: Path, index: dict[str, Any]) -> bool:
    """Whether a complete entry holds every shard the index names, at its size (a cheap stat)."""
    if _meta(entry) is None:
        return False
    for shard in index.get("shards", []):
        path = entry / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            return False
    return True


def _touch(entry: Path) -> None:
    """Mark an entry used now (its ``_cache.json`` mtime orders the LRU eviction)."""
    try:
        os.utime(entry / ENTRY_META)
    except OSError:
        pass  # evicted by another process meanwhile: the caller already has its files open or copied


def _remove(entry: Path) -> None:
    """Delete an entry: renamed away first, so no process ever sees a half-deleted entry as complete."""
    trash = entry.with_name(f".trash-{entry.name}-{uuid.uuid4().hex}")
    try:
        os.rename(entry, trash)
    except OSError:
        return  # already gone
    # Files another process has memory-mapped stay valid after unlink (POSIX).
    shutil.rmtree(trash, ignore_errors=True)


def _entries(root: Path) -> list[tuple[float, int, Path]]:
    """Complete entries as ``(last use, bytes, path)``; also clears leftovers of dead fills."""
    out = []
    now = time.time()
    for path in root.iterdir() if root.is_dir() else []:
        if path.name.startswith("."):
            try:
                stale = now - path.stat().st_mtime > STALE_TMP_S or path.name.startswith(".trash-")
            except OSError:
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
            continue
        meta = _meta(path)
        if meta is None or not path.is_dir():
            continue
        try:
            used = (path / ENTRY_META).stat().st_mtime
        except OSError:
            continue
        out.append((used, int(meta.get("bytes", 0)), path))
    return sorted(out)


def _make_room(root: Path, need: int, limit: int, keep: str) -> None:
    """Evict least recently used entries until ``need`` more bytes fit under ``limit``."""
    entries = [e for e in _entries(root) if e[2].name != keep]
    used = sum(size for _, size, _ in entries)
    for _, size, path in entries:
        if used + need <= limit:
            break
        _remove(path)
        used -= size


def _fetch(source: str, target: Path, shard: dict[str, Any]) -> None:
    """Stream one shard object to ``target``, hashing it; a size or sha256 mismatch is an error."""
    h, size = hashlib.sha256(), 0
    try:
        with storage.open_stream(source, decompress=False) as stream, open(target, "wb") as out:
            while True:
                block = stream.read(_CHUNK)
                if not block:
                    break
                h.update(block)
                size += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())  # a power cut must not leave a short file in a "complete" entry
    except FileNotFoundError:
        target.unlink(missing_ok=True)
        raise ShardtrainError(f"{storage.redact(source)}: shard named by the index is missing") from None
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise ShardtrainError(f"{storage.redact(source)}: copy failed ({storage.error_text(exc)})") from None
    if size != shard["bytes"] or h.hexdigest() != shard["sha256"]:
        target.unlink(missing_ok=True)
        raise ShardtrainError(
            f"{storage.redact(source)}: {size} bytes with sha256 {h.hexdigest()[:16]}..., the index says "
            f"{shard['bytes']} bytes with sha256 {shard['sha256'][:16]}... (overwritten or partial; "
            f"the copy was removed, re-run the stage)"
        )


def _fill(location: str, root: Path, key: str, index: dict[str, Any], raw: bytes, index_name: str,
          need: int) -> Path:
    """Copy the index's shards and the index into a temporary directory, then rename it into place."""
    entry = root / key
    tmp = root / f".tmp-{key}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        for shard in index.get("shards", []):
            name = str(shard["file"])
            if "/" in name or "\\" in name or name.startswith("."):
                raise ShardtrainError(f"{storage.redact(location)}: index names shard {name!r}, not a file name")
            _fetch(str(storage.join(location, shard["file"])), tmp / shard["file"], shard)
        (tmp / index_name).write_bytes(raw)
        meta = {"uri": storage.redact(location), "index_sha256": _sha(raw), "bytes": need}
        (tmp / ENTRY_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another process renamed its copy first (the target is a non-empty directory):
            # both were verified against the same index, so use the winner's.
            if not _usable(entry, index):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def local_split(location: storage.Location, *, cache_dir: str | Path | None = None,
                max_bytes: int | None = None) -> Path:
    """The local directory of a split: the path itself when local, else its verified cache entry.

    A remote split's index and the shards it names are copied (each checked against its
    sha256) into ``cache_root(cache_dir)``, keyed by the redacted URI and the index's
    sha256, and reused while the index is unchanged. ``max_bytes`` (default
    ``$SHARDTRAIN_CACHE_MAX_BYTES``) bounds the cache; least recently used entries make
    room, and a split that alone exceeds it is a ``ShardtrainError`` with both sizes.
    """
    path = storage.local_path(location)
    if path is not None:
        return path
    location = str(location)
    index, raw, where = fmt.load_index(location)
    shown = storage.redact(location)
    prefix = _sha(shown)[:16]
    key = f"{prefix}-{_sha(raw)[:16]}"
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    if not _usable(entry, index):
        if entry.exists():
            _remove(entry)  # broken (a shard deleted or truncated locally): fill it again
        need = len(raw) + sum(int(s["bytes"]) for s in index.get("shards", []))
        limit = max_cache_bytes(max_bytes)
        if limit is not None:
            if need > limit:
                raise ShardtrainError(
                    f"{shown}: the split is {need:,} bytes, more than the shard cache's limit of {limit:,} bytes "
                    f"(raise {MAX_BYTES_ENV} or max_bytes, or point {CACHE_ENV} at a larger disk)"
                )
            _make_room(root, need, limit, keep=key)
        _fill(location, root, key, index, raw, storage.basename(where), need)
        for other in root.glob(f"{prefix}-*"):
            if other.name != key:
                _remove(other)  # the same URI with an older index: never read again
    _touch(entry)
    return entry

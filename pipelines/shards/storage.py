"""One URI layer over ``pyarrow.fs``: local paths, ``file://``, ``s3://`` and the rest.

Every location the shard layer takes is a local path or a URI. ``resolve`` turns one into
a ``(pyarrow.fs.FileSystem, path)`` pair; the helpers below (``read_bytes``,
``write_bytes``, ``exists``, ``listdir``, ``delete``, ``open_input``) take the location
itself, so callers never build filesystems. Local paths and ``file://`` URIs keep the
exact local behaviour (atomic tmp + fsync + rename writes, memory-mapped reads);
``s3://`` goes through pyarrow's ``S3FileSystem`` (region and credentials from the
standard AWS variables and config files, an endpoint from ``endpoint_override``,
``SHARDTRAIN_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL``); other schemes (``gs://``,
``hdfs://``, ...) through ``pyarrow.fs.FileSystem.from_uri``, else fsspec.

Credentials never leave this module in text: ``redact`` strips userinfo and secret query
parameters from a URI, ``redact_text`` does it for every URI inside a message and masks
the values of the AWS/Azure secret variables; every error raised here goes through them.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Union
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from shardtrain.core.errors import ShardtrainError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyarrow import fs as pafs

Location = Union[str, "os.PathLike[str]"]

ENDPOINT_ENV = "SHARDTRAIN_S3_ENDPOINT"
# Checked in order when neither an argument nor the URI names an endpoint.
ENDPOINT_ENVS = (ENDPOINT_ENV, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# Values masked wherever they would appear in a message, an index or a log line.
SECRET_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
               "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN")
MASK = "***"
MIN_SECRET_LEN = 16

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# ``Path("s3://b/k")`` is ``s3:/b/k``: a URI some caller wrapped in ``Path`` by mistake.
_FOLDED = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:/[^/]")
# A URI inside free text: up to whitespace or a quote (messages quote paths with ' or ").
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# Query parameters whose values are secrets (access_key, secret_key, session_token, sig, ...).
_SECRET_PARAM = re.compile(r"key|secret|token|pass|sig|cred|auth", re.IGNORECASE)
# S3 query options ``resolve`` reads (pyarrow's from_uri names, so a URI means the same to both).
_S3_OPTIONS = ("region", "endpoint_override", "scheme")


def is_uri(location: Location) -> bool:
    """Whether ``location`` is a ``scheme://`` URI (``file://`` included), not a plain path."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


def scheme(location: Location) -> str:
    """The lower-case URI scheme (``s3``, ``file``, ...), or ``""`` for a plain path."""
    match = _SCHEME.match(location) if isinstance(location, str) else None
    return match.group(1).lower() if match else ""


def local_path(location: Location) -> Path | None:
    """The local ``Path`` of a plain path or a ``file://`` URI; ``None`` for a remote location."""
    kind = scheme(location)
    if not kind:
        if not isinstance(location, str) and _FOLDED.match(os.fspath(location)):
            raise ShardtrainError(f"{redact_text(os.fspath(location))}: a URI folded by pathlib (':/' for '://'); "
                                  f"pass URIs as strings")
        return Path(location)
    if kind != "file":
        return None
    parts = urlsplit(str(location))
    if parts.netloc not in ("", "localhost"):
        raise ShardtrainError(f"{redact(location)}: a file:// URI names no host (file:///abs/path)")
    return Path(unquote(parts.path))


def is_local(location: Location) -> bool:
    """Whether ``location`` is on this machine's filesystem (a plain path or ``file://``)."""
    return local_path(location) is not None


def _split_userinfo(uri: str) -> tuple[str | None, str]:
    """``(userinfo, the URI without it)``, tolerating an unencoded ``/`` in a secret.

    ``urlsplit`` ends the authority at the first ``/``, so ``s3://KEY:se/cret@bucket/x``
    (AWS secrets may hold ``/``) would keep the secret in the "path". Here the userinfo
    is everything before the last ``@`` ahead of the query, when it is ``user:...`` or has
    no ``/`` at all; an ``@`` inside a key (``s3://bucket/a@b``) is left alone.
    """
    match = _SCHEME.match(uri)
    if not match:
        return None, uri
    rest = uri[match.end():]
    at = rest.split("?", 1)[0].rfind("@")
    if at < 0:
        return None, uri
    userinfo = rest[:at]
    if "/" in userinfo and ":" not in userinfo.split("/", 1)[0]:
        return None, uri
    return userinfo, uri[:match.end()] + rest[at + 1:]


def redact(location: Location) -> str:
    """``location`` as text safe for logs, indexes and errors: no userinfo, no secret query values.

    ``s3://AKIA:secret@bucket/x?region=eu-west-1&secret_key=s`` becomes
    ``s3://bucket/x?region=eu-west-1``; a plain path comes back unchanged.
    """
    text = os.fspath(location)
    if not is_uri(text):
        return text
    parts = urlsplit(_split_userinfo(text)[1])
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _SECRET_PARAM.search(k)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _secret_values() -> list[str]:
    """The secret variables' current values, longest first (so a prefix never masks half of one)."""
    values = {os.environ.get(name, "") for name in SECRET_ENVS}
    # Real keys are 20 to 40+ characters; a short value ("test") would mask ordinary words.
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact_text(text: str) -> str:
    """Free text with every URI in it redacted and every secret variable's value masked."""
    text = _URI_IN_TEXT.sub(lambda m: redact(m.group(0)), text)
    for value in _secret_values():
        text = text.replace(value, MASK)
    return text


def error_text(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, redacted and cut to ``limit`` characters."""
    text = redact_text(" ".join(str(exc).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact_obj(obj: Any) -> Any:
    """A JSON-like structure with ``redact_text`` applied to every string in it (keys too)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, os.PathLike):
        return redact_text(os.fspath(obj))
    if isinstance(obj, dict):
        return {redact_obj(k) if isinstance(k, str) else k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def join(base: Location, *parts: str) -> Location:
    """``base`` joined with ``parts``: a ``Path`` for a plain path, a URI string for a URI.

    A URI is never passed through ``pathlib`` (which would fold ``s3://`` into ``s3:/``);
    its query string (``?endpoint_override=...``) stays at the end.
    """
    if not is_uri(base):
        return Path(base).joinpath(*parts)
    split = urlsplit(str(base))
    path = split.path.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            path = f"{path}/{part}"
    return urlunsplit((split.scheme, split.netloc, path, split.query, split.fragment))


def basename(location: Location) -> str:
    """The last component of a path or a URI (``part-00000-of-00002.arrow``)."""
    if not is_uri(location):
        return Path(location).name
    return urlsplit(str(location)).path.rstrip("/").rsplit("/", 1)[-1]


def _endpoint(explicit: str | None, query: dict[str, str]) -> str | None:
    """The S3 endpoint: argument, then the URI's ``endpoint_override``, then the environment."""
    if explicit:
        return explicit
    if query.get("endpoint_override"):
        return query["endpoint_override"]
    for name in ENDPOINT_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _s3(uri: str, endpoint_override: str | None) -> tuple[pafs.FileSystem, str]:
    """pyarrow's ``S3FileSystem`` and the ``bucket/key`` path of an ``s3://`` URI.

    Credentials come from the AWS SDK's default chain (environment, ``~/.aws`` files,
    instance roles) unless the URI carries them as userinfo or query parameters.
    """
    from pyarrow import fs as pafs

    userinfo, bare = _split_userinfo(uri)
    parts = urlsplit(bare)
    query = dict(parse_qsl(parts.query))
    kwargs: dict[str, Any] = {}
    endpoint = _endpoint(endpoint_override, query)
    if endpoint:
        match = re.match(r"^(https?)://(.*)$", endpoint)
        if match:
            kwargs["scheme"], endpoint = match.group(1), match.group(2)
        kwargs["endpoint_override"] = endpoint.rstrip("/")
    if query.get("scheme"):
        kwargs["scheme"] = query["scheme"]
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if userinfo:
        user, _, password = userinfo.partition(":")
        kwargs["access_key"], kwargs["secret_key"] = unquote(user), unquote(password)
    elif query.get("access_key"):
        kwargs["access_key"], kwargs["secret_key"] = query["access_key"], query.get("secret_key", "")
    if query.get("session_token") and "access_key" in kwargs:
        kwargs["session_token"] = query["session_token"]
    bucket = parts.netloc
    if not bucket:
        raise ShardtrainError(f"{redact(uri)}: an s3:// URI needs a bucket (s3://bucket/prefix)")
    try:
        # A delayed open uploads a small object with one PUT (no multipart round trips).
        filesystem = pafs.S3FileSystem(allow_delayed_open=True, **kwargs)
    except TypeError:  # pyarrow < 17 has no allow_delayed_open; uploads are still atomic per object
        filesystem = pafs.S3FileSystem(**kwargs)
    return filesystem, f"{bucket}{unquote(parts.path)}".rstrip("/")


def _other(uri: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem for any other scheme: pyarrow's own (gs, hdfs, ...), else fsspec's."""
    import pyarrow as pa
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        pyarrow_says = error_text(exc)
    except OSError as exc:  # a known scheme whose service is unreachable (hdfs connects here)
        raise ShardtrainError(f"{redact(uri)}: cannot open ({error_text(exc)})") from None
    try:
        import fsspec
    except ImportError:
        raise ShardtrainError(f"{redact(uri)}: unsupported URI ({pyarrow_says}; fsspec is not installed)") from None
    try:
        filesystem, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ShardtrainError(f"{redact(uri)}: unsupported URI ({error_text(exc)})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


def resolve(location: Location, *, endpoint_override: str | None = None) -> tuple[pafs.FileSystem, str]:
    """The ``(pyarrow.fs.FileSystem, path)`` pair for a local path or a URI.

    Plain paths and ``file://`` give a ``LocalFileSystem`` and an absolute path; ``s3://``
    an ``S3FileSystem`` (``endpoint_override`` here, in the URI's query, or from
    ``SHARDTRAIN_S3_ENDPOINT``/``AWS_ENDPOINT_URL``); anything else pyarrow's
    ``FileSystem.from_uri`` or, failing that, fsspec wrapped in a ``PyFileSystem``.
    """
    from pyarrow import fs as pafs

    path = local_path(location)
    if path is not None:
        return pafs.LocalFileSystem(), str(path.absolute())
    if scheme(location) in ("s3", "s3a"):
        return _s3(str(location), endpoint_override)
    return _other(str(location))


@contextmanager
def _remote(location: Location, what: str) -> Iterator[None]:
    """Re-raise a remote failure with the location redacted: ``FileNotFoundError`` or ``ShardtrainError``."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"{redact(location)}: no such object") from None
    except OSError as exc:
        raise ShardtrainError(f"{redact(location)}: {what} failed ({error_text(exc)})") from None


def _write_local_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a unique temporary file, fsync, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(location: Location, data: bytes | memoryview) -> None:
    """Write one file or object whole, atomically.

    Local: a temporary name in the same directory, fsync, rename (a reader sees the old
    file or the new one). Object stores: one upload, which the store makes visible only
    when it is complete (an interrupted upload leaves no object), so no rename is needed.
    """
    path = local_path(location)
    if path is not None:
        _write_local_atomic(path, data)
        return
    filesystem, key = resolve(location)
    with _remote(location, "write"):
        # No ``with``: leaving the block on an exception would close, i.e. try to commit, the
        # upload. Should a failed upload still be completed (pyarrow closes a stream it
        # destroys), the write raised: the task fails, no index names the object, a retry
        # rewrites it (FORMAT.md, "Commit protocol and object stores").
        stream = filesystem.open_output_stream(key, compression=None)  # the bytes as given, even for a .gz name
        stream.write(data)
        stream.close()


def read_bytes(location: Location) -> bytes:
    """The whole content of a file or object (``FileNotFoundError`` when absent)."""
    path = local_path(location)
    if path is not None:
        return path.read_bytes()
    filesystem, key = resolve(location)
    # compression=None: the stored bytes, as a local read gives them (pyarrow would gunzip a .gz).
    with _remote(location, "read"), filesystem.open_input_stream(key, compression=None) as stream:
        return stream.read()


def _info(location: Location) -> pafs.FileInfo:
    """pyarrow's ``FileInfo`` of a remote location (type ``NotFound`` when absent)."""
    filesystem, key = resolve(location)
    with _remote(location, "stat"):
        return filesystem.get_file_info(key)


def file_size(location: Location) -> int | None:
    """The size in bytes of a file or object, ``None`` when it does not exist."""
    path = local_path(location)
    if path is not None:
        return path.stat().st_size if path.is_file() else None
    from pyarrow import fs as pafs

    info = _info(location)
    return info.size if info.type == pafs.FileType.File else None


def exists(location: Location) -> bool:
    """Whether a file, object or directory (an object prefix on a store) exists."""
    path = local_path(location)
    if path is not None:
        return path.exists()
    from pyarrow import fs as pafs

    return _info(location).type != pafs.FileType.NotFound


def listdir(location: Location) -> list[str]:
    """The sorted names directly inside a directory or prefix; ``[]`` when there is none."""
    path = local_path(location)
    if path is not None:
        return sorted(os.listdir(path)) if path.is_dir() else []
    from pyarrow import fs as pafs

    filesystem, key = resolve(location)
    with _remote(location, "list"):
        infos = filesystem.get_file_info(pafs.FileSelector(key, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def delete(location: Location, missing_ok: bool = True) -> None:
    """Delete one file or object (nothing to do when it is absent and ``missing_ok``)."""
    path = local_path(location)
    if path is not None:
        path.unlink(missing_ok=missing_ok)
        return
    filesystem, key = resolve(location)
    try:
        with _remote(location, "delete"):
            filesystem.delete_file(key)
    except FileNotFoundError:
        if not missing_ok:
            raise


def makedirs(location: Location) -> None:
    """Create a local directory (and parents); object stores have no directories, so nothing."""
    path = local_path(location)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)


def open_input(location: Location) -> pa.NativeFile:
    """A random-access reader: a read-only memory map of a local file, a ranged reader remotely.

    The Arrow IPC file format needs random access (its footer is at the end); on a store
    each read is a ranged GET, so prefer the cache (``shardtrain.shards.cache``) for reading
    a whole split many times.
    """
    import pyarrow as pa

    path = local_path(location)
    if path is not None:
        return pa.memory_map(str(path), "r")
    filesystem, key = resolve(location)
    with _remote(location, "open"):
        return filesystem.open_input_file(key)


def open_stream(location: Location, *, decompress: bool = True) -> pa.NativeFile:
    """A sequential reader (a local file, or one streaming GET on a store).

    With ``decompress`` (the default, for readers of raw inputs) a ``.gz``/``.bz2``/... name
    is decompressed as it is read (pyarrow's ``compression="detect"``); ``decompress=False``
    gives the stored bytes, for copying and hashing.
    """
    filesystem, key = resolve(location)
    compression = "detect" if decompress else None
    if is_local(location):
        return filesystem.open_input_stream(key, compression=compression)
    with _remote(location, "open"):
        return filesystem.open_input_stream(key, compression=compression)


def digest(location: Location, chunk: int = 8 << 20) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file or object as stored, streamed in 8 MiB chunks (never held whole)."""
    h, size = hashlib.sha256(), 0
    with open_stream(location, decompress=False) as stream, (nullcontext() if is_local(location) else _remote(location, "read")):
        for block in iter(lambda: stream.read(chunk), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def expand(pattern: Location, *, hidden: bool = False) -> list[str]:
    """The files a path option names: one file, a directory's files, or a glob's matches; sorted.

    Works the same on a local path and on a URI (``s3://bucket/logs/*.log.gz``): a
    directory (or object prefix) gives the files directly inside it, a pattern with
    ``*``, ``?`` or ``[`` is matched (``fnmatch``, ``*`` does not cross ``/``) against every
    file under its fixed leading part. Names starting with ``.`` are skipped unless
    ``hidden``. Returns location strings (URIs stay URIs); ``[]`` when nothing matches,
    so the caller words the error with its own config key.
    """
    import fnmatch

    from pyarrow import fs as pafs

    text = str(pattern)
    wild = next((i for i, ch in enumerate(text) if ch in "*?["), None)
    if wild is None:
        size = file_size(text)
        if size is not None:
            return [text]
        base, rule = text.rstrip("/"), None
    else:
        base, rule = text[:text.rfind("/", 0, wild)] if "/" in text[:wild] else ".", text
    filesystem, key = resolve(base)
    local = local_path(base) is not None
    selector = pafs.FileSelector(key, recursive=rule is not None and "/" in text[len(base) + 1:],
                                 allow_not_found=True)
    with (nullcontext() if local else _remote(base, "list")):
        infos = filesystem.get_file_info(selector)
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or (not hidden and info.base_name.startswith(".")):
            continue
        rel = info.path[len(key):].lstrip("/")
        location = str(Path(base) / rel) if local else join(base, rel)
        if rule is None or fnmatch.fnmatchcase(location, rule) and location.count("/") == rule.count("/"):
            out.append(location)
    return sorted(out)

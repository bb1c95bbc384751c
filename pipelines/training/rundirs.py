"""Run directories: where a run lives, which run a stage picks, and the mirror of a run on object storage.

A run is ``O/runs/<YYYYmmdd-HHMMSS>-<name>/``. Under a URI ``O`` (``s3://bucket/prefix``)
training and evaluate work in a local staging directory (:func:`staging_dir`, under the
shard cache) and :class:`RunMirror` keeps ``O/runs/<run>/`` in step with it through
``shardtrain.shards.storage``: after every checkpoint (``checkpoints.MirrorCheckpointIO``)
and at the end of train and of evaluate, ``_COMPLETE`` last, so a reader that sees it sees
a whole run. (Lightning's own fsspec paths would need ``s3fs`` and append-mode files, e.g.
``epochs.csv``, that object stores do not have.) Runs are listed with ``storage.listdir``,
so ``--stage evaluate``, ``--run NAME`` and ``train.resume: last`` work on either. No
Lightning import here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from shardtrain.config import Config
from shardtrain.core.errors import ShardtrainError
from shardtrain.shards import cache, storage

RUN_DIR_ENV = "SHARDTRAIN_RUN_DIR"  # how DDP child ranks (re-launched scripts) find rank 0's run dir
COMPLETE_NAME = "_COMPLETE"  # written in a run dir, by rank 0, once training there finished
_MIRRORS: dict[str, RunMirror] = {}


class RunMirror:
    """A local run directory kept in step with a run URI (``s3://bucket/out/runs/<run>``).

    :meth:`sync` uploads every file that is new or changed since the last sync and deletes
    remote copies of files gone locally (pruned step checkpoints); ``_COMPLETE`` goes up only
    with ``final=True``, after everything else, so a reader that sees it sees a whole run.
    :meth:`pull` does the reverse for an existing run (``--stage evaluate``, ``resume``).
    """

    def __init__(self, local: Path, remote: str) -> None:
        self.local, self.remote = Path(local), str(remote)
        self._sent: dict[str, tuple[int, int]] = {}

    def _files(self) -> dict[str, Path]:
        """The run's files by relative POSIX path, without temporary files (``.name.tmp``)."""
        found = {}
        for path in self.local.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                found[path.relative_to(self.local).as_posix()] = path
        return found

    def sync(self, final: bool = False) -> None:
        """Upload what changed; with ``final``, ``_COMPLETE`` last (when training wrote it)."""
        files = self._files()
        for rel in sorted(files):
            if rel == COMPLETE_NAME:
                continue
            self._send(rel, files[rel])
        for rel in sorted(set(self._sent) - set(files)):
            storage.delete(storage.join(self.remote, rel))
            del self._sent[rel]
        if final and COMPLETE_NAME in files:
            self._send(COMPLETE_NAME, files[COMPLETE_NAME])

    def _send(self, rel: str, path: Path) -> None:
        """Upload one file unless it is unchanged (same size and mtime) since it was last sent."""
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        if self._sent.get(rel) == key:
            return
        storage.write_bytes(storage.join(self.remote, rel), path.read_bytes())
        self._sent[rel] = key

    def pull(self) -> Path:
        """Download every object of the remote run into the local directory; returns it."""
        from pyarrow import fs as pafs

        filesystem, root = storage.resolve(self.remote)
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(root):].lstrip("/")
            target = self.local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(storage.read_bytes(storage.join(self.remote, rel)))
            stat = target.stat()
            self._sent[rel] = (stat.st_size, stat.st_mtime_ns)
        return self.local

    def shown(self, path: str | Path) -> str:
        """A local path inside the run as its remote URI, without credentials (anything else unchanged)."""
        try:
            rel = Path(path).resolve().relative_to(self.local.resolve()).as_posix()
        except ValueError:
            return str(path)
        return storage.redact(self.remote if rel == "." else storage.join(self.remote, rel))


def staging_dir(remote_run: str) -> Path:
    """The local staging directory of a remote run: ``<shard cache>/runs/<sha of the URI>-<run name>``.

    Under the shard cache (``SHARDTRAIN_CACHE``) but outside its size limit: an entry without
    ``_cache.json`` is never evicted.
    """
    shown = storage.redact(remote_run)
    digest = hashlib.sha256(shown.encode()).hexdigest()[:16]
    return cache.cache_root() / "runs" / f"{digest}-{storage.basename(remote_run)}"


def register_mirror(local: Path, remote: str) -> RunMirror:
    """The :class:`RunMirror` of a local run directory (made once per process and remembered)."""
    key = str(Path(local).resolve())
    if key not in _MIRRORS:
        _MIRRORS[key] = RunMirror(Path(local), remote)
    return _MIRRORS[key]


def mirror_for(local: Path) -> RunMirror | None:
    """The mirror registered for a local run directory, ``None`` for a run that is local only."""
    return _MIRRORS.get(str(Path(local).resolve()))


def new_run_dir(cfg: Config, out: storage.Location) -> Path:
    """A fresh ``O/runs/<YYYYmmdd-HHMMSS>-<name>`` (DDP children reuse rank 0's via the environment).

    Under a URI ``out`` the run is named against the runs already in the store and trained in
    a local staging directory, mirrored to ``O/runs/<run>`` (see :func:`open_run`).
    """
    if os.environ.get(RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(os.environ[RUN_DIR_ENV])  # a DDP child rank re-launched by Lightning
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}"
    if not storage.is_local(out):
        taken = set(storage.listdir(storage.join(out, "runs")))
        run, i = name, 1
        while run in taken:
            run, i = f"{name}-{i}", i + 1
        run_dir = open_run(storage.join(out, "runs", run), pull=False)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        return run_dir
    base = storage.local_path(out) / "runs" / name
    run_dir, i = base, 1
    while run_dir.exists():
        run_dir, i = Path(f"{base}-{i}"), i + 1
    run_dir.mkdir(parents=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def open_run(run: storage.Location, pull: bool = True) -> Path:
    """The local directory of a run: itself when local; for a run URI its staging copy, mirrored.

    ``pull`` downloads the remote run's files first (evaluate, resume); a new run starts
    from an empty staging directory.
    """
    path = storage.local_path(run)
    if path is not None:
        return path
    local = staging_dir(str(run))
    if not pull and mirror_for(local) is None and local.exists():
        shutil.rmtree(local)  # a staging copy a crashed process left for a run name now reused
    local.mkdir(parents=True, exist_ok=True)
    mirror = register_mirror(local, str(run))
    if pull:
        mirror.pull()
    return local


def _runs(out: storage.Location) -> list[storage.Location]:
    """The run directories (or run URIs) under ``O/runs`` that hold a ``config.yaml``, oldest first."""
    root = storage.join(out, "runs")
    return [storage.join(root, name) for name in storage.listdir(root)
            if storage.exists(storage.join(root, name, "config.yaml"))]


def latest_run_dir(out: storage.Location, complete: bool = False) -> storage.Location:
    """The most recent run directory under ``O/runs``; with ``complete``, the newest whose training finished.

    ``train.resume: last`` takes the newest run, finished or not (resuming a crashed run is
    the point); ``--stage evaluate`` without ``--run`` takes the newest complete one. A run
    URI under a URI ``out`` (see :func:`open_run` for its local copy).
    """
    runs = _runs(out)
    shown = storage.redact(storage.join(out, "runs"))
    if not runs:
        raise ShardtrainError(f"{shown}: no runs yet; run --stage train first")
    if not complete:
        return runs[-1]
    done = [p for p in runs if is_complete(p)]
    if not done:
        raise ShardtrainError(f"{shown}: no complete run ({len(runs)} whose training did not finish, newest "
                              f"{storage.basename(runs[-1])}); run --stage train again")
    return done[-1]


def is_complete(run_dir: storage.Location) -> bool:
    """Whether training in ``run_dir`` (a directory or a run URI) finished (its ``_COMPLETE`` marker is there)."""
    marker = storage.join(run_dir, COMPLETE_NAME)
    local = storage.local_path(marker)
    return local.is_file() if local is not None else storage.file_size(marker) is not None


def mark_complete(run_dir: Path, info: dict[str, Any]) -> None:
    """Write ``_COMPLETE`` atomically (temporary name, then rename): training in ``run_dir`` finished."""
    tmp = run_dir / f".{COMPLETE_NAME}.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, run_dir / COMPLETE_NAME)


def find_run_dir(out: storage.Location, run: str | Path | None) -> storage.Location:
    """The run ``--stage evaluate`` uses: ``run`` (a run directory or URI, or a run name under ``O/runs``),
    else the newest complete run. A run whose training did not finish is refused.

    Local runs come back as a ``Path``, runs in a store as their URI (see :func:`open_run`).
    """
    if run is None:
        return latest_run_dir(out, complete=True)
    if storage.is_uri(run) and not storage.is_local(run):
        run_dir: storage.Location = str(run)
    else:
        path = storage.local_path(run)
        run_dir = path if path.is_dir() else storage.join(out, "runs", str(run))
    if not storage.exists(storage.join(run_dir, "config.yaml")):
        raise ShardtrainError(f"run: {storage.redact(str(run))}: not a run directory (no config.yaml in "
                              f"{storage.redact(run_dir)}); runs are under {storage.redact(storage.join(out, 'runs'))}")
    if not is_complete(run_dir):
        raise ShardtrainError(f"{storage.redact(run_dir)}: training did not finish in this run (no {COMPLETE_NAME}); "
                              "pick another with --run, or train again")
    return run_dir


def mirrored(run_dir: Path | None, path: str | Path) -> str:
    """A path inside a staged run as its remote URI (redacted); any other path as it is."""
    mirror = mirror_for(run_dir) if run_dir is not None else None
    return mirror.shown(path) if mirror is not None else str(path)

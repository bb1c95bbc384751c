"""``StepCheckpoint``: mid-epoch checkpoints every n optimizer steps, robust to several steps per call.

Lightning's ``ModelCheckpoint(every_n_train_steps=n)`` saves when ``global_step % n == 0``
after a training-step call. With ``train.steps_per_call`` > 1 one call takes several
optimizer steps and groups restart at every epoch, so ``global_step`` can jump over the
multiples of ``n``. This callback saves when a call *passes* a multiple of ``n`` instead
(for one step per call that is exactly Lightning's rule), as ``step-NNNNNNN.ckpt`` named by
the step it was taken at, and keeps the latest ``keep`` of them.

A run on object storage (``--out s3://bucket/prefix``) trains in a local staging directory
and :class:`RunMirror` copies it to ``<out>/runs/<run>/`` with ``shardtrain.shards.storage``:
:class:`MirrorCheckpointIO` mirrors right after every checkpoint Lightning saves or removes,
and the train and evaluate stages mirror at their ends, ``_COMPLETE`` last. (Lightning's own
fsspec paths would need ``s3fs`` and append-mode files, e.g. ``epochs.csv``, that object
stores do not have.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from shardtrain.shards import cache, storage

STEP_PREFIX = "step-"
COMPLETE_NAME = "_COMPLETE"  # written in a run dir, by rank 0, once training there finished
_MIRRORS: dict[str, RunMirror] = {}


class StepCheckpoint(pl.Callback):
    """Save ``<dirpath>/step-NNNNNNN.ckpt`` whenever ``global_step`` passes a multiple of ``every_n_steps``.

    The checkpoint is a full Lightning checkpoint taken after the call (optimizer, LR
    schedule, loop progress and the DataModule's position), so ``train.resume`` continues
    mid-epoch from it. Every rank calls ``save_checkpoint`` (the strategy writes once);
    rank 0 removes all but the newest ``keep`` step checkpoints of the directory.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int, keep: int = 2) -> None:
        super().__init__()
        if every_n_steps < 1 or keep < 1:
            raise ValueError(f"StepCheckpoint: every_n_steps and keep must be >= 1, got {every_n_steps}, {keep}")
        self.dirpath, self.every_n_steps, self.keep = Path(dirpath), int(every_n_steps), int(keep)
        self._last_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember where training (re)starts, so a resumed run does not save at once."""
        self._last_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Save when this call's optimizer steps passed a multiple of ``every_n_steps``."""
        step, last = int(trainer.global_step), self._last_step
        self._last_step = step
        if trainer.fast_dev_run or step // self.every_n_steps == last // self.every_n_steps:
            return
        trainer.save_checkpoint(self.dirpath / f"{STEP_PREFIX}{step:07d}.ckpt")
        if trainer.is_global_zero:
            self._prune()

    def _prune(self) -> None:
        """Delete all but the newest ``keep`` step checkpoints (by step number, not file time)."""
        found = sorted(self.dirpath.glob(f"{STEP_PREFIX}*.ckpt"),
                       key=lambda p: int(p.stem[len(STEP_PREFIX):]) if p.stem[len(STEP_PREFIX):].isdigit() else -1)
        for old in found[:-self.keep]:
            old.unlink(missing_ok=True)


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


class MirrorCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, then a :meth:`RunMirror.sync` after each save or removal.

    Lightning calls it on global rank zero only, so the mirror uploads once per checkpoint.
    """

    def __init__(self, mirror: RunMirror) -> None:
        super().__init__()
        self.mirror = mirror

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save locally, then mirror the run directory."""
        super().save_checkpoint(checkpoint, path, storage_options)
        self.mirror.sync()

    def remove_checkpoint(self, path: Any) -> None:
        """Remove locally, then mirror (the remote copy goes too)."""
        super().remove_checkpoint(path)
        self.mirror.sync()

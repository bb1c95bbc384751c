"""How fast ShardDataModule feeds batches, against the course's per-sample pipeline.

``feed_cpu`` / ``feed_none`` (and ``feed_gpu`` where CUDA is present): samples/s of one
pass over the Fashion-MNIST train shards (batch 64) through ``ShardDataModule`` with
``device_cache`` cpu / none / gpu, against a torch ``Dataset`` whose ``__getitem__``
returns ``(ToTensor()(PIL image), label)`` behind a ``DataLoader`` (batch 64, shuffled,
``num_workers=0``), measured in the same run. Goal: >= 50x.

``rss_feed``: in a fresh subprocess, the growth of peak RSS while feeding one epoch with
``device_cache: none``, over the RSS right after imports (torch alone maps ~0.7 GB of
libraries, which is not the DataModule's doing), against the shard bytes. Goal: <= shard
bytes + 300 MB.

    PYTHONPATH=. python benchmarks/bench_feed.py [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT.parent / "shared" / "data" / "fashion-mnist"
BATCH = 64


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (ubyte) as a numpy array of its declared shape."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_fashion_shards(directory: Path, rows: int | None = None, per_shard: int = 10000) -> int:
    """Write the Fashion-MNIST train split as shards + index; returns the shard bytes."""
    from shardtrain.shards import shard_name, write_index, write_shard

    images = read_idx(FASHION / "train-images-idx3-ubyte.gz")[:rows]  # (N, 28, 28) uint8
    labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:rows].astype(np.int64)  # (N,)
    directory.mkdir(parents=True, exist_ok=True)
    count = -(-len(images) // per_shard)
    entries = []
    for s in range(count):
        sl = slice(s * per_shard, (s + 1) * per_shard)
        cols = {"sample_id": np.arange(len(images), dtype=np.int64)[sl], "x": images[sl], "label": labels[sl]}
        entries.append(write_shard(directory / shard_name(s, count), cols, shard=(s, count)))
    write_index(directory, {
        "format": "shardtrain-shards", "version": 1, "split": "train", "rows": len(images),
        "schema": [{"name": "sample_id", "type": "int64"}, {"name": "x", "type": "fixed_size_list<uint8>[784]"},
                   {"name": "label", "type": "int64"}],
        "features": {"x": {"kind": "dense", "dtype": "uint8", "shape": [28, 28], "scale": 1 / 255, "offset": 0.0}},
        "labels": {"label": {"classes": [str(c) for c in range(10)], "counts": {}}},
        "shards": entries, "source": "fashion-mnist",
    })
    return sum(e["bytes"] for e in entries)


def feed_ours(directory: Path, cache: str, max_batches: int | None = None) -> float:
    """Samples/s of one ShardDataModule pass (setup excluded, as it happens once per run)."""
    import torch

    from shardtrain.config import DataConfig
    from shardtrain.data.datamodule import ShardDataModule

    device = "cuda" if cache == "gpu" else None
    dm = ShardDataModule.from_config(directory, None, None, DataConfig(batch_size=BATCH, device_cache=cache, val_fraction=0.0),
                         seed=0, device=device)
    dm.setup("fit")
    seen, t0 = 0, time.perf_counter()
    for i, batch in enumerate(dm.train_dataloader()):
        seen += batch["x"].shape[0]
        if max_batches is not None and i + 1 >= max_batches:
            break
    if cache == "gpu":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def feed_course(directory: Path, max_batches: int | None) -> float:
    """Samples/s of the per-sample Dataset + DataLoader pipeline over the same images."""
    import torch
    from torch.utils.data import DataLoader

    from shardtrain.shards import ShardSet

    ss = ShardSet(directory)
    images, labels = ss.concat("x"), ss.concat("label")

    from benchmarks.common import course_dataset

    loader = DataLoader(course_dataset(images, labels), batch_size=BATCH, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    seen, t0 = 0, time.perf_counter()
    for i, (x, _) in enumerate(loader):
        seen += x.shape[0]
        if max_batches is not None and i + 1 >= max_batches:
            break
    return seen / (time.perf_counter() - t0)


def _status(key: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss_child(directory: Path) -> dict:
    """In this (fresh) process: peak-RSS growth while feeding one epoch with ``device_cache: none``."""
    import torch  # noqa: F401  (imports first, so their mappings are the baseline)

    from shardtrain.config import DataConfig
    from shardtrain.data.datamodule import ShardDataModule

    try:  # reset VmHWM so the import phase's transient peak does not mask ours
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = _status("VmRSS")
    dm = ShardDataModule.from_config(directory, None, None, DataConfig(batch_size=BATCH, device_cache="none", val_fraction=0.0))
    dm.setup("fit")
    rows = sum(b["x"].shape[0] for b in dm.train_dataloader())
    return {"rows": rows, "base_rss": base, "peak_rss": _status("VmHWM")}


def run(quick: bool, threads: int = 1) -> list[dict]:
    """Measure everything; each row is ``{name, ours, baseline, unit, ratio, goal}``.

    Both pipelines run with ``threads`` torch intra-op threads (1 by default: batches of
    64 are too small to gain from more, and on a shared machine extra threads only spin).
    """
    import torch

    torch.set_num_threads(threads)
    rows = 20000 if quick else None
    course_batches = 60 if quick else 300  # the slow path is timed on a prefix, its rate is steady
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_feed_") as tmp:
        shards = Path(tmp) / "train"
        shard_bytes = write_fashion_shards(shards, rows)
        baseline = feed_course(shards, course_batches)
        caches = ["cpu", "none"] + (["gpu"] if torch.cuda.is_available() else [])
        for cache in caches:
            ours = feed_ours(shards, cache)
            results.append({"name": f"feed_{cache}", "ours": round(ours), "baseline": round(baseline),
                            "unit": "samples/s", "ratio": round(ours / baseline, 1), "goal": ">= 50x",
                            "threads": threads})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(shards)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"rss child failed: {proc.stderr[-2000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        grown = (child["peak_rss"] - child["base_rss"]) / 2**20
        results.append({"name": "rss_feed", "ours": round(grown, 1), "baseline": round(shard_bytes / 2**20, 1),
                        "unit": "MB", "ratio": round(grown / (shard_bytes / 2**20), 2),
                        "goal": "<= baseline + 300 MB", "absolute_peak_mb": round(child["peak_rss"] / 2**20, 1)})
    return results


def main() -> None:
    """Command line: print the results as a table (``--rss-child DIR`` is the internal subprocess)."""
    parser = argparse.ArgumentParser(description="ShardDataModule feed rate vs a per-sample DataLoader")
    parser.add_argument("--quick", action="store_true", help="20k rows and a shorter baseline")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both pipelines")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        print(json.dumps(rss_child(args.rss_child)))
        return
    for r in run(args.quick, args.threads):
        print(f"{r['name']:10s} ours {r['ours']:>10} {r['unit']:9s} baseline {r['baseline']:>8}  "
              f"ratio {r['ratio']:>6}  goal {r['goal']}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    import benchmarks  # noqa: F401  (maps the source tree into shardtrain when nothing is installed)

    main()

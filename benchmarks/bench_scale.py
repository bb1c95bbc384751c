"""Scale of the prepare stage: driver peak RSS and throughput per core at 1x, 4x and 16x an input.

    PYTHONPATH=. python benchmarks/bench_scale.py [--quick] [--sizes 1,4,16] [--only kdd99,http]

Inputs are made by replication with fresh ids: the KDD Cup 99 10% training file and
``corrected`` written ``k`` times into plain (uncompressed, so splittable) files (the
line number is the sample id, so every copy's records are new samples), and the NASA
HTTP excerpt written ``k`` times with every host renamed per copy (``host~c3``), so the
copies are new connections rather than longer ones. Each size runs ``shardtrain run
--stage prepare --executor ray`` in a fresh subprocess whose driver reports its own peak
RSS (``ru_maxrss``: the driver only; Ray's workers are other processes) and, since the
process's peak is often its start (torch, Ray), also the high-water mark of the stage alone
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``), from which the growth is taken; throughput is
input lines per CPU-second of the driver and every process under it (Ray's raylet and workers,
``psutil``), which other tenants' load cannot lower, and, beside it, per second of the stage's
wall time (Ray's start, a fixed cost, timed apart) per core given to Ray. The base (1x) is the KDD 10% file plus ``corrected``, and 8 copies of the NASA
excerpt (160,000 lines). Goals (issue 15): the driver's
peak grows by less than 200 MB from 1x to 16x, and throughput per core at 16x is within
20% of 1x. ``--quick`` uses 1x, 2x and 4x of a quarter of each input. Never run as a test.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import cores, data_dir, load_avg, row, skipped

KDD = Path("kddcup99")
NASA = Path("nasa-http") / "NASA_access_log_Aug95.first20000.log"
# The base size in copies of the source: the NASA excerpt alone (20,000 lines) is so small that
# fixed per-stage costs (task scheduling, index writes) would dominate its 1x throughput.
BASE_COPIES = {"kdd99": 1, "http": 8}
# The driver script: start Ray (timed apart: a fixed cost, not the stage's), run the CLI in this
# process, then print the stage's seconds and the driver's own peak RSS (KiB on Linux).
_DRIVER = (
    "import json, resource, sys, time\n"
    "t0 = time.perf_counter()\n"
    "from shardtrain.stages.ray_exec import ensure_ray\n"
    "ensure_ray()\n"
    "from shardtrain.cli import main\n"
    "def hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1])\n"
    "start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "try:\n"
    "    open('/proc/self/clear_refs', 'w').write('5')  # reset the high-water mark: the stage's own peak\n"
    "except OSError:\n"
    "    pass\n"
    "import psutil\n"
    "def cpu():  # CPU seconds of this driver and every process under it (raylet, Ray's workers)\n"
    "    me = psutil.Process()\n"
    "    total = 0.0\n"
    "    for proc in [me, *me.children(recursive=True)]:\n"
    "        try:\n"
    "            t = proc.cpu_times()\n"
    "            total += t.user + t.system\n"
    "        except psutil.Error:\n"
    "            pass\n"
    "    return total\n"
    "c1, t1 = cpu(), time.perf_counter()\n"
    "rc = main(sys.argv[1:])\n"
    "t2, c2 = time.perf_counter(), cpu()\n"
    "print('SCALE ' + json.dumps({'rc': rc, 'ray_start_s': t1 - t0, 'stage_s': t2 - t1, 'start_kb': start_kb,\n"
    "                             'stage_hwm_kb': hwm(), 'cpu_s': c2 - c1,\n"
    "                             'maxrss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
)


def _lines_of(path: Path, fraction: float) -> list[bytes]:
    """The lines of a (gzipped) text file, the first ``fraction`` of them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    return lines[: max(1, int(len(lines) * fraction))]


def make_kdd(src: Path, dst: Path, copies: int, fraction: float) -> int:
    """``copies`` replicas of the training file (one plain file each) and of ``corrected``; returns all lines."""
    train, test = _lines_of(src / "kddcup.data_10_percent.gz", fraction), _lines_of(src / "corrected.gz", fraction)
    (dst / "train").mkdir(parents=True)
    (dst / "test").mkdir()
    for k in range(copies):
        (dst / "train" / f"part-{k:03d}.csv").write_bytes(b"".join(train))
        (dst / "test" / f"part-{k:03d}.csv").write_bytes(b"".join(test))
    return (len(train) + len(test)) * copies


def make_http(src: Path, dst: Path, copies: int, fraction: float) -> int:
    """``copies`` replicas of the NASA excerpt with fresh hosts (``host~cK``), in one plain file; returns lines."""
    lines = _lines_of(src, fraction)
    dst.mkdir(parents=True)
    with open(dst / "access.log", "wb") as f:
        for k in range(copies):
            tag = f"~c{k}".encode()
            f.write(b"".join(ln.replace(b" ", tag + b" ", 1) if k else ln for ln in lines))
    return len(lines) * copies


def _config(kind: str, inputs: Path) -> list[str]:
    """The preset and ``--set`` overrides that point a run at the replicated inputs."""
    if kind == "kdd99":
        return ["kdd99", "--set", f"dataset.options.train_path={inputs / 'train'}",
                f"dataset.options.test_path={inputs / 'test'}"]
    return ["nasa-http", "--set", f"dataset.options.path={inputs / 'access.log'}"]


def prepare_once(kind: str, inputs: Path, out: Path) -> dict[str, Any]:
    """One ``--stage prepare --executor ray`` run in a fresh driver process: wall seconds and peak RSS (MB)."""
    env = dict(os.environ, SHARDTRAIN_OFFLINE="1")
    cmd = [sys.executable, "-c", _DRIVER, "run", *_config(kind, inputs), "--stage", "prepare",
           "--executor", "ray", "--out", str(out), "--force", "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    report = next((json.loads(ln[6:]) for ln in proc.stdout.splitlines() if ln.startswith("SCALE ")), None)
    if proc.returncode != 0 or report is None or report["rc"] not in (0, None):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{kind} prepare failed (rc {proc.returncode}): " + " | ".join(tail))
    return {"wall_s": wall, "stage_s": report["stage_s"], "ray_start_s": report["ray_start_s"],
            "peak_mb": report["maxrss_kb"] / 1024, "start_mb": report["start_kb"] / 1024,
            "stage_peak_mb": (report["stage_hwm_kb"] or report["maxrss_kb"]) / 1024, "cpu_s": report["cpu_s"]}


def run(quick: bool = False, sizes: tuple[int, ...] | None = None, only: tuple[str, ...] = ("kdd99", "http"),
        keep: Path | None = None) -> list[dict[str, Any]]:
    """The ``scale_prepare`` rows: per input kind, RSS growth 1x -> max and throughput ratio max vs 1x."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return [skipped("scale_prepare", "Ray is not installed", "MB")]
    sizes = sizes or ((1, 2, 4) if quick else (1, 4, 16))
    fraction = 0.25 if quick else 1.0
    root = data_dir()
    n_cpus = cores()
    rows: list[dict[str, Any]] = []
    sources = {"kdd99": root / KDD, "http": root / NASA}
    for kind in only:
        if not sources[kind].exists():
            rows.append(skipped(f"scale_prepare.{kind}", f"needs dataset {'kdd99' if kind == 'kdd99' else 'nasa-http'}"))
            continue
        per_size = {}
        with tempfile.TemporaryDirectory(prefix=f"scale-{kind}-", dir=keep) as tmp:
            for k in sizes:
                inputs, out = Path(tmp) / f"in{k}", Path(tmp) / f"out{k}"
                make = make_kdd if kind == "kdd99" else make_http
                lines = make(sources[kind], inputs, k * BASE_COPIES[kind], fraction)
                got = prepare_once(kind, inputs, out)
                got.update(lines=lines, per_core=lines / got["stage_s"] / n_cpus, per_cpu_s=lines / got["cpu_s"],
                           load1=load_avg()[0])
                per_size[k] = got
                print(f"{kind} {k}x: {lines} lines, stage {got['stage_s']:.1f} s (Ray start {got['ray_start_s']:.1f} s), "
                      f"{got['per_core']:,.0f} lines/s/core (wall), {got['per_cpu_s']:,.0f} lines per CPU s, "
                      f"driver peak {got['peak_mb']:.1f} MB, during the stage {got['stage_peak_mb']:.1f} MB "
                      f"(after Ray's start {got['start_mb']:.1f} MB; load {got['load1']})", file=sys.stderr, flush=True)
                shutil.rmtree(inputs)
                shutil.rmtree(out)
        lo, hi = per_size[sizes[0]], per_size[sizes[-1]]
        detail = {f"{k}x": {key: round(v, 1) for key, v in m.items()} for k, m in per_size.items()}
        # The stage's own high-water mark (reset after imports and Ray's start), so that a
        # fixed startup peak cannot hide growth during the stage.
        growth = hi["stage_peak_mb"] - lo["stage_peak_mb"]
        rows.append(row(f"scale_prepare.{kind}.rss_growth", growth, 200.0,
                        f"MB driver peak RSS growth {sizes[0]}x -> {sizes[-1]}x (baseline: the 200 MB allowance)",
                        200.0 / max(growth, 1.0), "ours < baseline", sizes=detail))
        # Per CPU-second of the driver and every process under it (Ray's workers): a core's
        # throughput that other tenants' load cannot lower; the wall-time view beside it.
        rows.append(row(f"scale_prepare.{kind}.throughput", hi["per_cpu_s"], lo["per_cpu_s"],
                        f"lines per CPU s at {sizes[-1]}x (baseline: at {sizes[0]}x)", hi["per_cpu_s"] / lo["per_cpu_s"],
                        "ratio >= 0.8", sizes=detail))
        rows.append(row(f"scale_prepare.{kind}.throughput_wall", hi["per_core"], lo["per_core"],
                        f"lines/s/core of wall time at {sizes[-1]}x (baseline: at {sizes[0]}x)",
                        hi["per_core"] / lo["per_core"], "ratio >= 0.8", sizes=detail))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: print the rows as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", help="comma-separated multiples, e.g. 1,4,16")
    ap.add_argument("--only", default="kdd99,http")
    args = ap.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    for r in run(args.quick, sizes, tuple(args.only.split(","))):
        print(json.dumps(r))


if __name__ == "__main__":
    main()

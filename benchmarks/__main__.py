"""Run the benchmark suite and print one table (and optionally JSON).

    python -m benchmarks run [--quick] [--json FILE] [--only NAME ...] [--list]

Each benchmark measures ours and its baseline in the same process and run. Benchmarks
come in groups that share one measurement (``feed_cpu`` and ``rss_feed`` are one pass of
``bench_feed``); ``--only`` runs the groups of the named benchmarks and keeps those rows
(a name also selects its sub-rows ``name.detail``). A benchmark that cannot run here (no
CUDA, no Ray or albumentations, no data) gives a ``skipped`` row that says why; one that
fails gives an ``error`` row and the exit status is 1. ``--quick`` uses smaller data and
fewer repeats (under 5 minutes on 2 cores); ``--smoke`` makes the suite's own benchmarks
tiny, for tests only (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Skip, format_table, load_avg, machine, row, skipped

# Modules the GPU machines lack; an ImportError naming one of them means "skip", not "fail".
OPTIONAL = ("ray", "albumentations", "nlpaug", "cv2", "sklearn", "torchvision", "PIL")


@dataclass(frozen=True)
class Group:
    """Benchmarks produced by one call of a module's ``run``; ``adapt`` normalises foreign rows."""

    module: str
    names: dict[str, str]  # benchmark name -> one-line description
    adapt: Callable[[Any, bool], list[dict]] | None = None


def _feed(mod: Any, quick: bool) -> list[dict]:
    """bench_feed rows with the suite's ratio direction and goal expressions."""
    out = []
    for r in mod.run(quick):
        if r["name"] == "rss_feed":
            ours, base = r["ours"], r["baseline"]
            out.append(row("rss_feed", ours, base, r["unit"], base / ours if ours else None, "ours <= baseline + 300",
                           absolute_peak_mb=r.get("absolute_peak_mb")))
        else:
            out.append(row(r["name"], r["ours"], r["baseline"], r["unit"], r["ours"] / r["baseline"], "ratio >= 50",
                           threads=r.get("threads")))
    if not any(r["name"] == "feed_gpu" for r in out):
        out.append(skipped("feed_gpu", "no CUDA device here (torch.cuda.is_available() is False)"))
    return out


def _logs(mod: Any, quick: bool) -> list[dict]:
    """bench_logs rows as ``log_parse`` (parse only) and ``log_parse.sessionize``."""
    out = []
    for r in mod.run(quick):
        name = "log_parse.sessionize" if "sessionize" in r["name"] else "log_parse"
        out.append(row(name, r["ours"], r["baseline"], r["unit"], r["ratio"], f"ratio >= {r['goal']:g}",
                       detail=r["name"]))
    return out


def _text(mod: Any, quick: bool) -> list[dict]:
    """bench_text rows as ``eda_throughput`` (+ ``.input_sentences``, ``.oewn_load``, ``.hashed_ngrams``)."""
    names = {"eda_oewn_augmented_sentences": "eda_throughput", "eda_oewn_input_sentences": "eda_throughput.input_sentences",
             "oewn_synonym_table_load": "eda_throughput.oewn_load"}
    out = []
    for r in mod.run(quick):
        name = names.get(r["name"], "eda_throughput.hashed_ngrams" if r["name"].startswith("hashed") else r["name"])
        goal = f"ours >= {r['goal']:g}" if r.get("goal") else None
        out.append(row(name, r["ours"], r["baseline"], r["unit"], r["ratio"], goal, detail=r["name"]))
    return out


GROUPS: list[Group] = [
    Group("benchmarks.bench_feed", {
        "feed_cpu": "ShardDataModule (device_cache cpu) samples/s vs per-sample PIL+ToTensor DataLoader, batch 64",
        "feed_none": "same with device_cache none (memory-mapped views)",
        "rss_feed": "peak RSS growth feeding one epoch with device_cache none vs shard bytes",
        "feed_gpu": "same with device_cache gpu (needs CUDA)",
    }, _feed),
    Group("benchmarks.bench_train", {
        "epoch_cpu_bs64": "one CPU epoch at batch 64, our stack vs the course's loop (CPU s)",
        "lightning_overhead_cpu": "same epoch, our stack vs a hand-written batched loop (CPU s)",
    }),
    Group("benchmarks.bench_augment", {
        "augment_scaling": "Ray augment stage on all cores vs single-process albumentations loop (images/s)",
    }),
    Group("benchmarks.bench_ensemble", {
        "ensemble_vmap_cpu": "K=8 BaggingEnsemble (impl auto) epoch vs 8 members trained one after another (CPU s)",
    }),
    Group("benchmarks.bench_text", {
        "eda_throughput": "EDA with OEWN synonyms vs the reference-style loop (sentences/s/core)",
    }, _text),
    Group("benchmarks.bench_logs", {
        "log_parse": "columnar CLF parser (+ sessionize) vs per-line regex loop (lines/s/core)",
    }, _logs),
    Group("benchmarks.bench_scale", {
        "scale_prepare": "prepare (Ray) on 1x/4x/16x KDD99 and HTTP-log inputs: driver peak RSS growth, lines/s/core",
    }, lambda mod, quick: mod.run(quick)),
    Group("benchmarks.bench_gpu", {
        "time_to_89_gpu": "fit seconds to 0.89 test accuracy, Lightning + GPU-resident DataModule vs plain PyTorch",
        "epoch_gpu_bs512": "one GPU epoch at batch 512, Lightning vs plain resident loop",
        "ensemble_vmap_gpu": "K=8 vmap ensemble epoch vs one model's epoch on the GPU",
    }),
]


def all_names() -> dict[str, str]:
    """Every benchmark name and its description, in suite order."""
    return {n: d for g in GROUPS for n, d in g.names.items()}


def _selected(r: dict, wanted: set[str]) -> bool:
    return r["name"] in wanted or r["name"].split(".", 1)[0] in wanted


def _optional_missing(exc: ImportError) -> str | None:
    """The optional package behind an ImportError, if it is one of :data:`OPTIONAL`."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return name if name in OPTIONAL else None


def run_group(group: Group, wanted: Sequence[str], quick: bool, smoke: bool) -> list[dict]:
    """Run one group and return the rows of ``wanted`` (skipped/error rows when it cannot run)."""
    try:
        mod = importlib.import_module(group.module)
        if group.adapt is not None:
            rows = group.adapt(mod, quick or smoke)
        else:
            rows = mod.run(quick, only=list(wanted), smoke=smoke)
    except Skip as exc:
        return [skipped(n, str(exc)) for n in wanted]
    except ImportError as exc:
        missing = _optional_missing(exc)
        if missing is not None:
            return [skipped(n, f"{missing} is not installed here ({exc})") for n in wanted]
        traceback.print_exc()
        return [dict(skipped(n, f"error: {type(exc).__name__}: {exc}"), error=True) for n in wanted]
    except Exception as exc:  # keep the other benchmarks' numbers; report this one
        traceback.print_exc()
        return [dict(skipped(n, f"error: {type(exc).__name__}: {exc}"), error=True) for n in wanted]
    load = load_avg()
    rows = [r for r in rows if _selected(r, set(wanted))]
    for r in rows:
        r.setdefault("load_avg", load)
    found = {r["name"].split(".", 1)[0] for r in rows}
    return rows + [skipped(n, "this run produced no row for it (see the module)") for n in wanted if n not in found]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the selected benchmarks, print the table, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="shardtrain benchmark suite")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run benchmarks and print a table")
    p.add_argument("--quick", action="store_true", help="smaller data, fewer repeats (< 5 min on 2 cores)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for tests; the numbers mean nothing")
    p.add_argument("--json", type=Path, help="also write the rows as a JSON list to FILE")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    p.add_argument("--list", action="store_true", help="list the benchmark names and exit")
    args = parser.parse_args(argv)
    names = all_names()
    if args.list:
        for n, d in names.items():
            print(f"{n:24s} {d}")
        return 0
    wanted = list(args.only or names)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; see --list")
    info = machine()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(f"# {info['date']}  {info['cpu']}  {info['cores']} cores  gpu={info['gpu']}  torch {info['torch']}  "
          f"mode={mode}  load avg at start {info['load_avg']}", flush=True)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for group in GROUPS:
        mine = [n for n in group.names if n in wanted]
        if not mine:
            continue
        start = time.perf_counter()
        got = run_group(group, mine, args.quick, args.smoke)
        rows += got
        print(f"# {group.module}: {time.perf_counter() - start:.0f} s, load avg {load_avg()}", file=sys.stderr,
              flush=True)
    print(format_table(rows))
    print(f"# total {time.perf_counter() - t0:.0f} s; load avg at end {load_avg()}; ratio = how many times better "
          "ours is than the baseline (> 1 is better)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the recipes of the README "Results" table from raw files and print their table.

    python -m benchmarks.recipes [--only NAME ...] [--seeds 0,1,2] [--ablations] [--quick]
                                 [--work DIR] [--out FILE] [--list]

A recipe is a preset plus ``--set`` overrides, trained once per seed by a
``shardtrain run PRESET --data-dir $SHARDTRAIN_DATA --out WORK/NAME --set seed=S ...``
subprocess (the stages in process, ``--executor local``, so that the child's CPU time is
all of the run's). Each run's ``metrics.json`` gives the test metric (``metric``: a key
path such as ``test.attack.accuracy``) and the ``extra`` key paths (a dict such as
``recall_per_class`` gives one mean per key); ``run.json`` gives the fit's wall seconds and
epochs. The table shows, per recipe and per ablation (the recipe with one ingredient
changed), the mean +- std over seeds (sample std, n-1), the seeds, epochs, the CPU seconds
of the whole run (user + sys of the child: prepare, augment, fit and evaluate) and the
fit's wall seconds, plus the machine. ``--out FILE`` writes the markdown there and the rows
as JSON beside it (``FILE.json``). ``--quick`` trains one epoch per run (a check that the
recipes run, its numbers mean nothing).

Recipes: the fashion-mnist ones come from ``benchmarks/recipes_fashion.py`` (``RECIPES``,
when it exists), the kdd99 and sms-spam ones are :data:`RECIPES` here; every entry is
``{"name", "preset", "set": [...], "seeds": [...], "metric", "extra": [...], "anchor",
"ablations": [{"name", "set": [...]}]}`` (``extra`` optional).
This is a benchmark: never run by the tests (a recipe trains for minutes per seed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, data_dir, machine

MACHINE_TEXT = "2-core x86_64 VM, shared"

# What the two SMS recipes share: seeds, the metrics shown and the anchor.
_SMS: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "metric": "test.accuracy",
    "extra": ["test.f1_spam", "test.recall_per_class"],
    "anchor": "logistic regression on our features: 0.9865 (issue), 0.9919 (C=10000, seed-0 split)",
}

RECIPES: list[dict[str, Any]] = [
    {
        "name": "kdd99",
        "preset": "kdd99",
        "set": [],
        "seeds": [0, 1, 2],
        "metric": "test.attack.accuracy",
        "extra": ["test.attack.recall_per_class", "test.category.recall_per_class", "test.category.accuracy"],
        "anchor": "KDD Cup 99 winner: 0.927 on corrected; logistic regression on our features: 0.9219",
        "ablations": [
            {"name": "no class weight", "set": ["train.class_weights={}"]},
            {"name": "class weight 4", "set": ['train.class_weights={"attack:attack": 4.0}']},
        ],
    },
    {
        "name": "sms-spam",
        "preset": "sms-spam",
        "set": [],
        **_SMS,
        "ablations": [
            {"name": "no EDA copies", "set": ["augment.copies=0"]},
            {"name": "no EDA copies, weight decay 0.01", "set": ["augment.copies=0", "train.weight_decay=0.01"]},
            {"name": "no EDA copies, weight decay 0.01, spam weight 3",
             "set": ["augment.copies=0", "train.weight_decay=0.01", 'train.class_weights={"spam": 3.0}']},
        ],
    },
]


RECIPES.append({
    "name": "sms-spam-best",
    "preset": "sms-spam-best",  # pipelines/presets/sms-spam-best.yaml, run by path (not a registered name)
    "set": [],
    **_SMS,
    "ablations": [
        {"name": "no spam weight", "set": ["train.class_weights={}"]},
        {"name": "weight decay 0.05", "set": ["train.weight_decay=0.05"]},
        {"name": "4 EDA copies", "set": ["augment.copies=4"]},
    ],
})


def all_recipes() -> list[dict[str, Any]]:
    """The fashion-mnist recipes (``benchmarks.recipes_fashion.RECIPES``, when that module exists) then ours."""
    try:
        from benchmarks.recipes_fashion import RECIPES as fashion
    except ImportError:  # not written yet: the table has the others
        fashion = []
    return [*fashion, *RECIPES]


def lookup(metrics: dict[str, Any], path: str) -> Any:
    """The value at a dotted key path of ``metrics.json`` (``test.attack.accuracy``), or None."""
    value: Any = metrics
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0.0 for one value; None for none)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(mean: float | None, std: float | None, digits: int = 4) -> str:
    """``0.9312 +- 0.0011`` (``-`` when nothing was measured)."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def command(recipe: dict[str, Any], sets: Sequence[str], seed: int | str = "S") -> str:
    """The ``shardtrain run`` command line of one run, as the README shows it."""
    parts = ["shardtrain", "run", recipe["preset"], "--data-dir", "$SHARDTRAIN_DATA", "--out", "OUT",
             "--set", f"seed={seed}", f"model.seed={seed}", *sets]
    return " ".join(p if "{" not in p and " " not in p else f"'{p}'" for p in parts)


def shardtrain_argv() -> list[str]:
    """How to start the CLI: the ``shardtrain`` script beside this Python, else ``python -c`` on its main."""
    script = Path(sys.executable).with_name("shardtrain")
    if script.exists():
        return [str(script)]
    found = shutil.which("shardtrain")
    return [found] if found else [sys.executable, "-c", "import sys; from shardtrain.cli import main; sys.exit(main())"]


def preset_arg(preset: str) -> str:
    """What ``shardtrain run`` is given: a registered preset by name, else ``pipelines/presets/<name>.yaml`` by path."""
    from shardtrain.config import PRESETS

    path = REPO / "pipelines" / "presets" / f"{preset}.yaml"
    return str(path) if preset not in PRESETS and "/" not in preset and path.exists() else preset


def run_once(recipe: dict[str, Any], sets: Sequence[str], seed: int, out: Path, executor: str,
             log: Path) -> dict[str, Any]:
    """One ``shardtrain run`` subprocess; returns its metrics, fit seconds, epochs and CPU seconds."""
    runs = out / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    argv = [*shardtrain_argv(), "run", preset_arg(recipe["preset"]), "--data-dir", str(data_dir()), "--out", str(out),
            # Both seeds: `seed` (data order, validation carve, dropout) and `model.seed` (the initial
            # weights, the bagging bootstraps); with `seed` alone the spread over seeds is too small.
            "--executor", executor, "-q", "--set", f"seed={seed}", f"model.seed={seed}", *sets]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(argv)} failed with status {proc.returncode} (log {log}):\n{tail}")
    new = sorted((p for p in (set(runs.iterdir()) - before) if (p / "metrics.json").exists()),
                 key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"{' '.join(argv)}: no new run with a metrics.json under {runs}")
    run_dir = new[-1]
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    return {"seed": seed, "run_dir": str(run_dir), "metrics": json.loads((run_dir / "metrics.json").read_text()),
            "fit_seconds": info.get("fit_seconds"), "epochs": info.get("epochs"), "cpu_seconds": cpu,
            "wall_seconds": wall}


def summarise(recipe: dict[str, Any], variant: str, sets: Sequence[str], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: the metric and extras as mean/std over the seeds' runs, epochs, CPU and fit seconds."""
    row: dict[str, Any] = {"recipe": recipe["name"], "variant": variant, "preset": recipe["preset"],
                           "command": command(recipe, sets), "metric": recipe["metric"],
                           "seeds": [r["seed"] for r in runs], "anchor": recipe.get("anchor", "")}
    row["mean"], row["std"] = mean_std([lookup(r["metrics"], recipe["metric"]) for r in runs])
    extras: dict[str, Any] = {}
    for path in recipe.get("extra", []):
        values = [lookup(r["metrics"], path) for r in runs]
        if values and all(isinstance(v, dict) for v in values):  # recall_per_class: one mean per class
            extras[path] = {k: mean_std([v.get(k) for v in values]) for k in values[0]}
        else:
            extras[path] = mean_std(values)
    row["extra"] = extras
    row["epochs"] = sorted({r["epochs"] for r in runs if r.get("epochs") is not None})
    row["cpu_seconds"] = mean_std([r["cpu_seconds"] for r in runs])
    row["fit_seconds"] = mean_std([r["fit_seconds"] for r in runs])
    row["values"] = [lookup(r["metrics"], recipe["metric"]) for r in runs]
    return row


def extra_text(extras: dict[str, Any]) -> str:
    """The extras of a row as one cell: ``f1_spam 0.93 +- 0.01; category recall normal 0.98 +- 0.00, ...``."""
    cells = []
    for path, value in extras.items():
        name = ".".join(path.split(".")[1:]) or path
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {fmt(*v, digits=3)}" for k, v in value.items())
            cells.append(f"{name}: {inner}")
        else:
            cells.append(f"{name} {fmt(*value)}")
    return "; ".join(cells)


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The results table (one row per recipe and ablation) and the machine line, as markdown."""
    head = ("| recipe | preset | command | test metric (mean +- std) | other test metrics | seeds | epochs "
            "| CPU s (run) | fit s (wall) | anchor |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        name = r["recipe"] if r["variant"] == "recipe" else f"{r['recipe']}: {r['variant']}"
        metric = f"{r['metric'].split('.', 1)[-1]} {fmt(r['mean'], r['std'])}"
        seeds = ",".join(str(s) for s in r["seeds"])
        epochs = ",".join(str(e) for e in r["epochs"]) or "-"
        lines.append(f"| {name} | {r['preset']} | `{r['command']}` | {metric} | {extra_text(r['extra'])} | {seeds} "
                     f"| {epochs} | {fmt(*r['cpu_seconds'], digits=0)} | {fmt(*r['fit_seconds'], digits=0)} "
                     f"| {r['anchor'] if r['variant'] == 'recipe' else ''} |")
    lines.append("")
    lines.append(f"Machine: {MACHINE_TEXT} ({info.get('cpu')}, {info.get('cores')} cores, torch {info.get('torch')}, "
                 f"load average {info.get('load_avg')} at the end, {info.get('date')}).")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.recipes", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these recipes (by name)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                   help="comma-separated seeds for every recipe (default: each recipe's own, 0,1,2)")
    p.add_argument("--ablations", action="store_true", help="also run each recipe's ablations")
    p.add_argument("--quick", action="store_true", help="one epoch per run and one seed: checks that it runs")
    p.add_argument("--work", type=Path, default=REPO / "recipes-out", help="output root of the runs (default: ./recipes-out)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="stage executor (default: local)")
    p.add_argument("--out", type=Path, help="also write the markdown table here and the rows to FILE.json")
    p.add_argument("--list", action="store_true", help="list the recipes and their ablations, run nothing")
    return p.parse_args(argv)


def select(recipes: list[dict[str, Any]], only: Sequence[str] | None) -> list[dict[str, Any]]:
    """The recipes named by ``--only`` (all when None); an unknown name is an error naming the known ones."""
    if not only:
        return recipes
    names = [r["name"] for r in recipes]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SystemExit(f"recipes: unknown recipe(s) {unknown}; known: {names}")
    return [r for r in recipes if r["name"] in only]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected recipes (and ablations) for every seed and print the table."""
    args = parse_args(argv)
    recipes = select(all_recipes(), args.only)
    if args.list:
        for r in recipes:
            print(f"{r['name']}: {command(r, r['set'])}")
            for a in r.get("ablations", []):
                print(f"  ablation {a['name']}: {' '.join(a['set'])}")
        return 0
    os.environ.setdefault("SHARDTRAIN_OFFLINE", "1")
    rows = []
    for recipe in recipes:
        seeds = args.seeds or recipe.get("seeds") or [0, 1, 2]
        variants = [("recipe", list(recipe["set"]))]
        if args.ablations:
            variants += [(a["name"], [*recipe["set"], *a["set"]]) for a in recipe.get("ablations", [])]
        for variant, sets in variants:
            if args.quick:
                seeds, sets = seeds[:1], [*sets, "train.max_epochs=1"]
            tag = variant.replace(" ", "_").replace(":", "")
            out = args.work / recipe["name"]
            out.mkdir(parents=True, exist_ok=True)
            runs = []
            for seed in seeds:
                log = out / f"{tag}-seed{seed}.log"
                print(f"[recipes] {recipe['name']} / {variant} / seed {seed}: {command(recipe, sets, seed)}",
                      file=sys.stderr, flush=True)
                runs.append(run_once(recipe, sets, seed, out, args.executor, log))
            rows.append(summarise(recipe, variant, sets, runs))
    info = machine()
    text = markdown(rows, info)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        Path(f"{args.out}.json").write_text(json.dumps({"machine": {**info, "text": MACHINE_TEXT}, "rows": rows},
                                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the benchmark suite: result rows, goals, timing, machine facts, shards.

A result row is ``{"name", "ours", "baseline", "unit", "ratio", "goal"}`` plus optional
extras (``met``, ``load_avg``, ``skipped``, wall times...). ``ratio`` always says how many
times better ours is than the baseline (> 1 is good): ``ours / baseline`` for rates,
``baseline / ours`` for times and sizes. ``goal`` is a small expression over ``ratio``,
``ours``, ``baseline`` and ``cores``, e.g. ``"ratio >= 2"``, ``"ours <= 1.0"``,
``"ours <= baseline + 300"``, ``"ratio >= 0.8 * cores"``; :func:`goal_met` evaluates it.

Timing on a shared machine: CPU benchmarks run torch with one intra-op thread and
compare CPU seconds of this process (``time.process_time``), best of N, the same method
for ours and the baseline, so other tenants' load inflates both sides alike. Every row
carries the load average (``os.getloadavg``) seen while it ran.
"""

from __future__ import annotations

import ast
import atexit
import functools
import operator
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KEYS = ("name", "ours", "baseline", "unit", "ratio", "goal")
_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.GtE: operator.ge, ast.LtE: operator.le, ast.Gt: operator.gt, ast.Lt: operator.lt,
}


class Skip(Exception):
    """Raised by a benchmark that cannot run here (no CUDA, no Ray...); the message says why."""


def data_dir() -> Path:
    """``$SHARDTRAIN_DATA`` or ``../shared/data`` beside the repository (read-only real data)."""
    env = os.environ.get("SHARDTRAIN_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_avg() -> list[float]:
    """The 1/5/15-minute load averages, rounded (what other tenants were doing)."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Facts that belong beside every table: CPU, cores, GPU, library versions, load, date."""
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu_model(), "cores": cores(),
                            "python": platform.python_version(), "load_avg": load_avg()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = info["gpu"] = None
    return info


# ----------------------------------------------------------------------------- rows and goals
def row(name: str, ours: float | None, baseline: float | None, unit: str, ratio: float | None, goal: str | None,
        **extra: Any) -> dict[str, Any]:
    """One result row; ``met`` is filled from the goal (None when there is none or nothing ran)."""
    out = {"name": name, "ours": _round(ours), "baseline": _round(baseline), "unit": unit,
           "ratio": None if ratio is None else round(float(ratio), 3), "goal": goal, **extra}
    out["met"] = goal_met(out)
    return out


def skipped(name: str, reason: str, unit: str = "", goal: str | None = None) -> dict[str, Any]:
    """The row of a benchmark that could not run here, saying why."""
    return row(name, None, None, unit, None, goal, skipped=reason)


def _round(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, 4) if abs(x) < 100 else round(x, 1)


def _eval(node: ast.AST, names: dict[str, float]) -> Any:
    """Evaluate a goal expression: numbers, the names above, + - * /, one comparison."""
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left, names), _eval(node.right, names))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _OPS:
        return _OPS[type(node.ops[0])](_eval(node.left, names), _eval(node.comparators[0], names))
    raise ValueError(f"goal: unsupported expression {ast.dump(node)}")


def goal_met(r: dict[str, Any]) -> bool | None:
    """Whether row ``r`` meets its goal; None without a goal or a measurement."""
    goal = r.get("goal")
    if not goal or r.get("skipped"):
        return None
    names = {"ratio": r.get("ratio"), "ours": r.get("ours"), "baseline": r.get("baseline"),
             "cores": r.get("cores", cores())}
    tree = ast.parse(goal, mode="eval")
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if used - set(names):
        raise ValueError(f"goal {goal!r}: unknown names {sorted(used - set(names))}; use {sorted(names)}")
    if any(names[n] is None for n in used):
        return None
    return bool(_eval(tree, names))


def check_row(r: dict[str, Any]) -> None:
    """Raise ValueError unless ``r`` has the documented keys and types (used by the smoke test)."""
    missing = [k for k in KEYS if k not in r]
    if missing:
        raise ValueError(f"row {r.get('name')!r}: missing keys {missing}")
    if not isinstance(r["name"], str) or not isinstance(r["unit"], str):
        raise ValueError(f"row {r['name']!r}: name and unit must be strings")
    for k in ("ours", "baseline", "ratio"):
        if r[k] is not None and not isinstance(r[k], (int, float)):
            raise ValueError(f"row {r['name']!r}: {k} must be a number or null, got {r[k]!r}")
    if r["goal"] is not None:
        goal_met(r)  # parses


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text table: name, ours, baseline, unit, ratio, goal, met?, load (1 min)."""
    head = ("name", "ours", "baseline", "unit", "ratio", "goal", "met?", "load1")
    lines = []
    for r in rows:
        met = {True: "yes", False: "NO", None: "-"}[r.get("met")]
        if r.get("skipped"):
            lines.append((r["name"], "skipped", "", "", "", r.get("goal") or "", "-", _fmt(r.get("load_avg"))))
            lines.append(("", f"  ({r['skipped']})", "", "", "", "", "", ""))
            continue
        lines.append((r["name"], _fmt(r["ours"]), _fmt(r["baseline"]), r["unit"],
                      "" if r["ratio"] is None else f"{r['ratio']:.2f}x", r.get("goal") or "", met,
                      _fmt(r.get("load_avg"))))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)] if lines else [len(h) for h in head]
    widths[1] = min(widths[1], 12)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, (list, tuple)):
        return f"{x[0]:.1f}" if x else ""
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return str(x)


# ----------------------------------------------------------------------------- timing
def best_of(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Run each callable ``repeats`` times, interleaved; per name the best CPU and wall seconds.

    Interleaving (a, b, a, b...) spreads a burst of foreign load over both sides instead
    of handing it to whichever ran during the burst.
    """
    best = {k: {"cpu": float("inf"), "wall": float("inf")} for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            best[name]["cpu"] = min(best[name]["cpu"], time.process_time() - c0)
            best[name]["wall"] = min(best[name]["wall"], time.perf_counter() - w0)
    return best


def set_threads(threads: int) -> None:
    """Torch intra-op threads for this process (1: per-core figures that a busy machine cannot skew)."""
    import torch

    torch.set_num_threads(threads)


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and the warnings a one-epoch, no-val fit triggers."""
    import logging
    import warnings

    import pytorch_lightning  # noqa: F401  (its import sets its logger to INFO; quiet it afterwards)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


# ----------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _scratch() -> Path:
    """One temporary directory per process for prepared shards, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="shardtrain_bench_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=4)
def fashion_out(features: str = "pixels") -> Path:
    """An output dir holding Fashion-MNIST prepare shards (train 60k, test 10k), built once per process.

    Uses the real stage runner with the in-process executor, so no Ray is needed.
    """
    from shardtrain.config import load_config
    from shardtrain.api import run_stages

    data = data_dir()
    if not (data / "fashion-mnist").is_dir():
        raise Skip(f"Fashion-MNIST not found under {data} (set SHARDTRAIN_DATA)")
    out = _scratch() / f"fashion-{features}"
    cfg = load_config("fashion-mnist", [f"prepare.features={features}"])
    run_stages(cfg, "prepare", out, executor="local", data_dir=str(data))
    return out


def fashion_dirs(features: str = "pixels") -> dict[str, Path]:
    """``{"train", "test"}`` prepare shard directories of Fashion-MNIST (see :func:`fashion_out`)."""
    prep = fashion_out(features) / "shards" / "prepare"
    return {"train": prep / "train", "test": prep / "test"}


def scratch_dir(prefix: str) -> Path:
    """A fresh directory under the per-process scratch dir (run dirs, checkpoints)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch()))


def course_dataset(images: Any, labels: Any) -> Any:
    """The course's per-sample Dataset: one ``ToTensor()(PIL image)`` (1, 28, 28) and label per item.

    This is the slow path shardtrain replaces; the feed and training benchmarks both use it
    as their baseline.
    """
    from PIL import Image
    from torch.utils.data import Dataset
    from torchvision.transforms import ToTensor

    class CourseImages(Dataset):
        """One PIL image per ``__getitem__``, converted by ``ToTensor``."""

        def __init__(self) -> None:
            self.to_tensor = ToTensor()

        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return self.to_tensor(Image.fromarray(images[i])), int(labels[i])

    return CourseImages()

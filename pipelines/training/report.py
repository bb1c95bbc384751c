"""Run reports: learning curves and confusion matrices as PNG, and the end-of-run summary table."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

SUMMARY_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "coverage", "loss")


def _matplotlib():
    """matplotlib with the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of Lightning's CSVLogger ``metrics.csv`` with numbers parsed (blank cells dropped)."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def epoch_points(rows: list[dict[str, float]], key: str) -> list[tuple[float, float]]:
    """``(epoch + 1, value)`` of ``key`` logged at the end of each *training* epoch.

    The evaluate stage validates again after fit; Lightning logs that with the epoch
    counter already past the last training epoch, and it is not a point of the curve.
    """
    trained = {int(r["epoch"]) for r in rows if "train_loss_epoch" in r}
    seen: dict[int, float] = {}
    for r in rows:
        if key in r and "epoch" in r and int(r["epoch"]) in trained:
            seen.setdefault(int(r["epoch"]), r[key])
    return [(e + 1, v) for e, v in sorted(seen.items())]


def plot_learning_curves(metrics_csv: Path, path: Path) -> Path | None:
    """Loss (train per logged step, validation per epoch) and validation accuracy against epochs."""
    rows = read_metrics_csv(metrics_csv)
    if not rows:
        return None
    plt = _matplotlib()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    train = [(r["epoch"], r["train_loss"]) for r in rows if "train_loss" in r and "epoch" in r]
    steps_per_epoch = {}
    for r in rows:
        if "train_loss" in r and "step" in r:
            steps_per_epoch.setdefault(int(r["epoch"]), []).append(r["step"])
    if train:
        # Spread each epoch's logged steps over [epoch, epoch + 1) so curves share one x axis.
        xs = []
        for r in rows:
            if "train_loss" in r and "step" in r:
                steps = steps_per_epoch[int(r["epoch"])]
                lo, hi = min(steps), max(steps) + 1
                xs.append(r["epoch"] + (r["step"] - lo) / max(hi - lo, 1))
        ax_loss.plot(xs, [y for _, y in train], label="train loss", alpha=0.6)
    val = epoch_points(rows, "val_loss")
    if val:
        ax_loss.plot(*zip(*val), marker="o", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    acc = epoch_points(rows, "val_accuracy")
    if acc:
        ax_acc.plot(*zip(*acc), marker="o", label="val accuracy")
        ax_acc.legend()
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str = "") -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    plt = _matplotlib()
    n = len(matrix)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels=classes[:n], rotation=45, ha="right")
    ax.set_yticks(range(n), labels=classes[:n])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > peak / 2 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    """One table cell."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def summary_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of the headline metrics per split (and per task for multitask runs)."""
    rows = []
    for split, values in metrics.items():
        if not isinstance(values, dict):
            continue
        if "accuracy" in values or "loss" in values or "mse" in values:
            rows.append((split, values))
        else:
            rows.extend((f"{split}/{task}", v) for task, v in values.items() if isinstance(v, dict))
    keys = [k for k in SUMMARY_KEYS if any(k in v for _, v in rows)]
    extra = sorted({k for _, v in rows for k in v if k in ("mse", "mcc", "oob_accuracy_mean")} - set(keys))
    keys += extra
    header = ["split"] + keys
    table = [header] + [[name] + [_fmt(v.get(k)) for k in keys] for name, v in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

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
    """Rows of a CSV of numbers (Lightning's ``metrics.csv``, a run's ``epochs.csv``), blank cells dropped."""
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


def curve_rows(source: Path) -> list[dict[str, float]]:
    """Per-epoch rows (``epoch`` 1-based, ``train_loss``, ``val_loss``, ``*_accuracy``, ``lr``) for the curves.

    ``source`` is a run's ``epochs.csv``, or (runs from before it existed) Lightning's
    CSVLogger ``metrics.csv``, whose per-epoch training loss was ``train_loss_epoch``.
    """
    rows = read_metrics_csv(source)
    if not any("train_loss_epoch" in r for r in rows):  # epochs.csv, or a newer metrics.csv's epoch rows
        return [r for r in rows if "epoch" in r and "train_loss" in r]
    merged: dict[int, dict[str, float]] = {}
    for key, name in (("train_loss_epoch", "train_loss"), ("val_loss", "val_loss"), ("val_accuracy", "val_accuracy")):
        for epoch, value in epoch_points(rows, key):
            merged.setdefault(int(epoch), {"epoch": float(epoch)})[name] = value
    return [merged[e] for e in sorted(merged)]


def chosen_by(selection: dict[str, Any] | None) -> str:
    """``evaluated epoch 8 (chosen by max val_accuracy: 0.6730)``: which checkpoint was evaluated and why."""
    if not selection or selection.get("epoch") is None:
        return "evaluated: last weights"
    text = f"evaluated epoch {selection['epoch']}"
    if selection.get("monitor") is None:
        return f"{text} (the last; no validation)"
    value = selection.get("value")
    shown = f": {value:.4f}" if isinstance(value, float) else ""
    return f"{text} (chosen by {selection.get('mode')} {selection['monitor']}{shown})"


def accuracy_keys(rows: list[dict[str, float]]) -> tuple[str, ...]:
    """The accuracy columns of the curve rows: train/val overall first, then per task (``val_<task>_accuracy``)."""
    found = {k for r in rows for k in r if k.endswith("_accuracy")}
    main = [k for k in ("train_accuracy", "val_accuracy") if k in found]
    return (*main, *sorted(found - set(main)))


def plot_learning_curves(source: Path, path: Path, title: str = "", evaluated_epoch: int | None = None,
                         selection: dict[str, Any] | None = None) -> Path | None:
    """Loss, accuracy (train and val per epoch, per task too) and the learning rate against epochs, in one figure.

    ``source``: ``epochs.csv`` (or an old run's ``metrics.csv``, see :func:`curve_rows`).
    ``evaluated_epoch`` (1-based) is marked on every panel: the checkpoint the metrics are
    of; ``selection`` (``metrics.json``'s) names the monitor that chose it in the legend.
    """
    rows = curve_rows(source)
    if not rows:
        return None
    plt = _matplotlib()
    if selection is not None and evaluated_epoch is None:
        evaluated_epoch = selection.get("epoch")
    panels = [("loss", ("train_loss", "val_loss")), ("accuracy", accuracy_keys(rows)), ("learning rate", ("lr",))]
    panels = [(label, keys) for label, keys in panels if any(k in r for r in rows for k in keys)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    styles = {"train": dict(marker="o", markersize=3), "val": dict(marker="s", markersize=3, linestyle="--")}
    n_epochs = int(max(r["epoch"] for r in rows))
    for ax, (label, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in rows if key in r and "epoch" in r]
            if not points:
                continue
            split, task = key.split("_")[0], key[key.find("_") + 1:-len("_accuracy")] if label == "accuracy" else ""
            name = {"lr": "learning rate"}.get(key, f"{split} {task + ' ' if task else ''}{label}")
            if label == "accuracy" and not task and len(keys) > 2:
                name += " (task mean)"  # multitask: the overall curve is the mean of the per-task ones
            ax.plot(*zip(*points), label=name, **styles.get(split, dict(marker="o", markersize=3)))
        if evaluated_epoch is not None:
            mark = chosen_by(selection) if selection else f"evaluated epoch {evaluated_epoch}"
            ax.axvline(evaluated_epoch, color="grey", linewidth=1, linestyle=":", label=mark)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        if n_epochs <= 20:
            ax.set_xticks(range(1, n_epochs + 1))
        if label == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str = "") -> Path:
    """A confusion matrix, counts and row-normalised side by side (rows: true class, columns: predicted).

    Classes are named on both axes (class ids when the index has no names); the
    normalised panel's diagonal is each class's recall.
    """
    import numpy as np

    plt = _matplotlib()
    counts = np.asarray(matrix, dtype=float)
    n = len(counts)
    names = [str(c) for c in classes[:n]] + [str(i) for i in range(len(classes), n)]
    totals = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = max(4.5, 0.42 * n + 2.2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side + 0.6))
    fontsize = 8 if n <= 12 else 6
    panels = ((axes[0], counts, "counts", "{:.0f}"), (axes[1], normalised, "normalised by true class", "{:.2f}"))
    for ax, values, label, fmt in panels:
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=values.max() if values.size and values.max() > 0 else 1)
        ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), labels=names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label)
        peak = values.max() if values.size else 0
        for i in range(n):
            for j in range(n):
                if values is normalised and counts[i, j] == 0:
                    continue  # empty cells stay blank in the normalised panel: the errors stand out
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=fontsize,
                        color="white" if values[i, j] > peak / 2 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    total = int(counts.sum())
    accuracy = float(np.trace(counts) / total) if total else float("nan")
    fig.suptitle(f"{title + ': ' if title else ''}confusion matrix, {total} samples, accuracy {accuracy:.4f}")
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
    """A plain-text table of the headline metrics per split (and per task for multitask runs).

    Below it, one ``recall per class (test[/task]): <class> <recall> ...`` line per test
    classification task (from ``recall_per_class``).
    """
    rows = []
    for split, values in metrics.items():
        if not isinstance(values, dict) or split == "selection":
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
    # Per-class recall of the test split (per task): where a skewed test set hides its errors
    # (KDD99's novel attacks, the rare class of a spam filter) behind a high accuracy.
    for name, values in rows:
        recall = values.get("recall_per_class")
        if name.split("/")[0] == "test" and isinstance(recall, dict) and recall:
            cells = "  ".join(f"{cls} {_fmt(float(r))}" for cls, r in recall.items())
            lines.append(f"recall per class ({name}): {cells}")
    return "\n".join(lines)


def plot_confusions(test: dict[str, Any], labels: dict[str, Any], run_dir: Path, run: str) -> None:
    """One confusion-matrix PNG per classification task of the test split, titled with the run and epoch."""
    if "confusion_matrix" in test:
        (desc,) = labels.values() if len(labels) == 1 else (next(iter(labels.values())),)
        plot_confusion(test["confusion_matrix"], [str(c) for c in desc.get("classes") or []],
                       run_dir / "confusion_matrix.png", f"{run}, test")
        return
    for column, desc in labels.items():
        task = column[len("label_"):] if column.startswith("label_") else column
        if isinstance(test.get(task), dict) and "confusion_matrix" in test[task]:
            plot_confusion(test[task]["confusion_matrix"], [str(c) for c in desc.get("classes") or []],
                           run_dir / f"confusion_matrix_{task}.png", f"{run}, test: {task}")

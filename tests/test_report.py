"""Learning-curve points: one validation point per trained epoch, not the evaluate stage's re-validation."""

from __future__ import annotations

from pathlib import Path

from shardtrain.training.report import epoch_points, plot_learning_curves, read_metrics_csv

# The CSV Lightning wrote for a 2-epoch fashion-mnist run; the last two rows are the evaluate stage.
CSV = """epoch,step,test_accuracy,test_loss,train_loss,train_loss_epoch,val_accuracy,val_loss
0,2,,,0.6558,,,
0,6,,,,,0.8362,0.4600
0,6,,,,0.9109,,
1,11,,,0.3405,,,
1,13,,,,,0.8650,0.3738
1,13,,,,0.4075,,
2,14,,,,,0.8650,0.3738
2,14,0.8544,0.4055,,,,
"""


def test_epoch_points_skip_the_post_fit_validation(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    rows = read_metrics_csv(path)
    assert epoch_points(rows, "val_loss") == [(1, 0.46), (2, 0.3738)]
    assert epoch_points(rows, "val_accuracy") == [(1, 0.8362), (2, 0.865)]
    assert plot_learning_curves(path, tmp_path / "curves.png").stat().st_size > 0


def test_curve_rows_from_old_metrics_csv_are_per_trained_epoch(tmp_path: Path) -> None:
    from shardtrain.training.report import curve_rows

    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    rows = curve_rows(path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["train_loss"] for r in rows] == [0.9109, 0.4075] and [r["val_loss"] for r in rows] == [0.46, 0.3738]


EPOCHS = """epoch,step,train_loss,val_loss,train_accuracy,val_accuracy,lr,seconds
1,41,2.29,2.25,0.12,0.25,0.00046,12.8
2,82,2.11,1.59,0.38,0.72,0.0013,4.5
3,123,1.28,0.54,0.63,0.83,0.0023,1.6
"""


def test_learning_curves_have_every_epoch_lr_and_a_title(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    from shardtrain.training.report import curve_rows

    path = tmp_path / "epochs.csv"
    path.write_text(EPOCHS)
    assert [r["lr"] for r in curve_rows(path)] == [0.00046, 0.0013, 0.0023]
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    plot_learning_curves(path, tmp_path / "curves.png", title="20261201-run: evaluated epoch 2", evaluated_epoch=2)
    (fig,) = saved
    assert fig._suptitle.get_text() == "20261201-run: evaluated epoch 2"
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "accuracy", "learning rate"]
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    for name in ("train loss", "val loss", "train accuracy", "val accuracy", "learning rate"):
        assert list(lines[name].get_xdata()) == [1, 2, 3], name  # one point per epoch, not per logged step
    assert "evaluated epoch 2" in lines


MULTITASK_EPOCHS = """epoch,step,train_loss,val_loss,train_accuracy,val_accuracy,lr,seconds,\
train_colour_accuracy,val_colour_accuracy,val_spam_accuracy
1,10,1.2,1.1,0.5,0.55,0.001,1.0,0.5,0.6,0.5
2,20,0.9,0.8,0.6,0.65,0.001,1.0,0.6,0.7,0.6
"""


def test_the_evaluated_epoch_names_its_monitor_and_tasks_get_accuracy_curves(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    from shardtrain.training.report import chosen_by, summary_table

    path = tmp_path / "epochs.csv"
    path.write_text(MULTITASK_EPOCHS)
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    chosen = {"monitor": "val_accuracy", "mode": "max", "epoch": 2, "value": 0.65, "checkpoint": "best.ckpt"}
    plot_learning_curves(path, tmp_path / "curves.png", title=f"run: {chosen_by(chosen)}", selection=chosen)
    (fig,) = saved
    assert "val_accuracy" in fig._suptitle.get_text() and "epoch 2" in fig._suptitle.get_text()
    accuracy = next(ax for ax in fig.axes if ax.get_title() == "accuracy")
    labels = [line.get_label() for line in accuracy.get_lines()]
    assert labels[:2] == ["train accuracy (task mean)", "val accuracy (task mean)"]
    assert {"train colour accuracy", "val colour accuracy", "val spam accuracy"} <= set(labels)
    marks = [line for line in accuracy.get_lines() if "chosen by max val_accuracy" in line.get_label()]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [2, 2]
    # metrics.json's selection entry is not a split of the summary table
    assert "selection" not in summary_table({"test": {"accuracy": 0.5, "loss": 1.0}, "selection": chosen})


def test_confusion_matrix_names_classes_raw_and_normalised(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    from shardtrain.training.report import plot_confusion

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    plot_confusion([[8, 2], [1, 9]], ["ham", "spam"], tmp_path / "cm.png", "run-1, epoch 3, test")
    (fig,) = saved
    raw, norm = [ax for ax in fig.axes if ax.get_title()]
    assert raw.get_title() == "counts" and norm.get_title() == "normalised by true class"
    for ax in (raw, norm):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["ham", "spam"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["ham", "spam"]
    assert [t.get_text() for t in raw.texts] == ["8", "2", "1", "9"]
    assert [t.get_text() for t in norm.texts] == ["0.80", "0.20", "0.10", "0.90"]
    assert fig._suptitle.get_text() == "run-1, epoch 3, test: confusion matrix, 20 samples, accuracy 0.8500"
    monkeypatch.undo()
    path = plot_confusion([[3, 0], [0, 4]], ["a", "b"], tmp_path / "real.png")
    assert path.stat().st_size > 0


def test_augment_preview_has_a_header_and_row_captions(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from shardtrain.augment.image import preview_grid

    originals = np.zeros((3, 8, 8), dtype=np.uint8)
    copies = np.full((3, 2, 8, 8), 255, dtype=np.uint8)
    plain = Image.open(preview_grid(originals, copies, tmp_path / "plain.png", zoom=4))
    captioned = Image.open(preview_grid(originals, copies, tmp_path / "captioned.png", zoom=4,
                                        captions=["id 0: T-shirt", "id 1: Trouser", "id 2: Bag"], title="demo preview"))
    untitled = Image.open(preview_grid(originals, copies, tmp_path / "untitled.png", zoom=4, captions=["id 0"]))
    assert captioned.width > plain.width  # room on the left for the captions
    assert plain.height > (3 * 10 + 2) * 4 and captioned.height > untitled.height  # a header row; the title above it
    left = np.asarray(captioned.convert("L"))[:, : captioned.width - plain.width]
    assert (left < 128).any()  # caption text was drawn there


def test_summary_table_shows_the_test_recall_per_class_of_each_task() -> None:
    from shardtrain.training.report import summary_table

    metrics = {
        "val": {"attack": {"accuracy": 0.99, "recall_per_class": {"normal": 0.99, "attack": 0.99}}},
        "test": {"attack": {"accuracy": 0.92, "recall_per_class": {"normal": 0.98, "attack": 0.91}},
                 "category": {"accuracy": 0.9, "recall_per_class": {"normal": 0.98, "r2l": 0.0588}}},
    }
    lines = summary_table(metrics).splitlines()
    recall = [line for line in lines if line.startswith("recall per class")]
    assert recall == ["recall per class (test/attack): normal 0.9800  attack 0.9100",
                      "recall per class (test/category): normal 0.9800  r2l 0.0588"]
    assert lines[0].split()[:2] == ["split", "accuracy"] and len(lines) == 2 + 3 + 2  # header, rule, 3 rows, 2 recall lines

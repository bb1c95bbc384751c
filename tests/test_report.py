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

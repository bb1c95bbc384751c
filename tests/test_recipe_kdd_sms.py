"""``train.class_weights`` (the kdd99 recipe's cost-sensitive loss) and the recipes runner's table.

No training run here: the weights are checked on the module's loss of one batch, the
runner on a fake ``metrics.json``.
"""

from __future__ import annotations

import json

import pytest
import torch

from shardtrain.config import load_config
from shardtrain.core.errors import ShardtrainError
from shardtrain.models.build import build_model
from shardtrain.training.module import ShardTrainModule, class_weight_tables, weighted_by_class

LABELS = {"label_attack": {"classes": ["normal", "attack"]},
          "label_category": {"classes": ["normal", "dos", "probe", "r2l", "u2r"]}}


def test_class_weight_tables_name_task_and_class_and_refuse_unknown_ones() -> None:
    tasks = {"attack": 2, "category": 5}
    names = {t: d["classes"] for t, d in zip(tasks, LABELS.values())}
    tables = class_weight_tables({"attack:attack": 4.0, "category:r2l": 2.0}, tasks, names)
    assert tables["attack"].tolist() == [1.0, 4.0]
    assert tables["category"].tolist() == [1.0, 1.0, 1.0, 2.0, 1.0]
    with pytest.raises(ShardtrainError, match="no class 'worm'"):
        class_weight_tables({"attack:worm": 2.0}, tasks, names)
    with pytest.raises(ShardtrainError, match="'<task>:<class>'"):
        class_weight_tables({"attack": 2.0}, tasks, names)  # two tasks: the task must be named
    # one task: the class alone is enough
    assert class_weight_tables({"spam": 3.0}, {"label": 2}, {"label": ["ham", "spam"]})["label"].tolist() == [1.0, 3.0]


def test_weighted_by_class_scales_w_per_row_and_leaves_unlabelled_rows() -> None:
    batch = {"x": torch.zeros(4, 3), "w": torch.tensor([1.0, 1.0, 0.0, 2.0]), "unit_weights": True,
             "y": {"label_attack": torch.tensor([0, 1, 1, -1]), "label_category": torch.tensor([0, 3, 1, 2])}}
    out = weighted_by_class(batch, {"attack": torch.tensor([1.0, 4.0]), "category": torch.tensor([1, 1, 1, 0.5, 1])})
    assert out["w"].tolist() == [1.0, 2.0, 0.0, 2.0]  # row 1: 4 * 0.5; row 2 is padding (0); row 3 unlabelled attack
    assert out["unit_weights"] is False and batch["w"].tolist() == [1.0, 1.0, 0.0, 2.0]  # the input batch is untouched


def test_the_module_loss_weights_the_attack_class() -> None:
    def module(weights: dict[str, float]) -> ShardTrainModule:
        cfg = load_config("kdd99", overrides=[f"train.class_weights={json.dumps(weights)}"])
        torch.manual_seed(0)
        model = build_model(cfg.model, {"kind": "dense", "shape": [6]}, LABELS)
        return ShardTrainModule(model, cfg.model, cfg.train, cfg.evaluate, LABELS).eval()  # eval: no dropout

    torch.manual_seed(1)
    y = {"label_attack": torch.tensor([0, 1] * 4), "label_category": torch.tensor([0, 1, 0, 3] * 2)}
    batch = {"x": torch.randn(8, 6), "w": torch.ones(8), "y": y}
    plain, weighted = module({}), module({"attack:attack": 3.0})
    assert weighted.class_weights["attack"].tolist() == [1.0, 3.0] and plain.class_weights == {}
    with torch.no_grad():
        got = float(weighted.training_loss(batch))
        # the same as the unweighted module given w = 3 on the attack rows
        expected = float(plain.training_loss({**batch, "w": torch.tensor([1.0, 3.0] * 4)}))
        unweighted = float(plain.training_loss(batch))
    assert got == pytest.approx(expected, rel=1e-6) and got != pytest.approx(unweighted, rel=1e-3)


def test_recipes_runner_table_from_fake_metrics() -> None:
    from benchmarks import recipes

    recipe = {"name": "kdd99", "preset": "kdd99", "set": ["train.max_epochs=8"], "metric": "test.attack.accuracy",
              "extra": ["test.category.recall_per_class"], "anchor": "winner 0.927"}
    runs = [{"seed": s, "metrics": {"test": {"attack": {"accuracy": a},
                                             "category": {"recall_per_class": {"normal": 0.98, "r2l": r}}}},
             "fit_seconds": 100.0 + s, "epochs": 8, "cpu_seconds": 90.0} for s, a, r in ((0, 0.93, 0.1), (1, 0.94, 0.3))]
    row = recipes.summarise(recipe, "recipe", recipe["set"], runs)
    assert row["mean"] == pytest.approx(0.935) and row["std"] == pytest.approx(0.00707, abs=1e-5)
    assert row["extra"]["test.category.recall_per_class"]["r2l"][0] == pytest.approx(0.2)
    text = recipes.markdown([row], {"cpu": "x", "cores": 2})
    assert "accuracy 0.9350 +- 0.0071" in text and "r2l 0.200 +- 0.141" in text and "| 0,1 | 8 |" in text
    assert "2-core x86_64 VM, shared" in text
    args = recipes.parse_args(["--only", "kdd99", "--seeds", "0,1,2", "--ablations", "--quick"])
    assert args.seeds == [0, 1, 2] and args.only == ["kdd99"] and args.ablations and args.quick
    assert [r["name"] for r in recipes.select(recipes.all_recipes(), ["kdd99", "sms-spam"])] == ["kdd99", "sms-spam"]
    with pytest.raises(SystemExit, match="unknown recipe"):
        recipes.select(recipes.all_recipes(), ["nope"])

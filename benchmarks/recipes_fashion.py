"""The Fashion-MNIST recipes of issue 18, as data for ``benchmarks/recipes.py`` (which runs them).

Each recipe is a preset plus ``--set`` overrides, run once per seed; each ablation changes one
ingredient of the recipe (takes it out, or adds one that was tried and left out; its ``set`` is
applied after the recipe's own), so the table shows what that ingredient is worth. ``metric`` is the test accuracy's key path in the run's
``metrics.json``. The presets themselves hold the recipe, so a recipe's own ``set`` is empty.

Ingredients of ``fashion-mnist`` (single MLP, 784-512-512-10) over the old preset (15 epochs,
dropout 0.2: 0.8933): 30 onecycle epochs and dropout 0.3. On-device batch augmentation is an
ablation, not an ingredient: at 30 epochs horizontal flips cost 0.003 and 1-pixel shifts more.
``fashion-mnist-bagging`` is 8 such members, each on its own Poisson(1) bootstrap (seed 0, 30
epochs: 0.8990; with horizontal flips 0.8947, so flips are an ablation here too).
``benchmarks/recipes.py`` varies ``seed`` (data order, validation carve, dropout draws) and
``model.seed`` (initialisation, bootstraps) together; the figures above varied ``seed`` only.
"""

from __future__ import annotations

SEEDS = [0, 1, 2]
METRIC = "test.accuracy"  # metrics.json: {"test": {"accuracy": ...}} for a single-task model

FLIPS = ["data.batch_augment.enabled=true", "data.batch_augment.shift=0", "data.batch_augment.flip=true"]
SHIFTS_AND_FLIPS = ["data.batch_augment.enabled=true", "data.batch_augment.shift=1", "data.batch_augment.flip=true"]

RECIPES: list[dict] = [
    {
        "name": "fashion-mnist",
        "preset": "fashion-mnist",
        "set": [],
        "seeds": SEEDS,
        "metric": METRIC,
        "anchor": "Zalando's benchmark table: a tuned 2-layer MLP ~0.90 (MLPClassifier rows 0.87-0.88)",
        "ablations": [
            {"name": "15 epochs (was 30)", "set": ["train.max_epochs=15"]},
            {"name": "old preset: 15 epochs, dropout 0.2", "set": ["train.max_epochs=15", "model.dropout=0.2"]},
            {"name": "+ horizontal flips (batch augmentation)", "set": FLIPS},
            {"name": "+ 1-px shifts and flips (batch augmentation)", "set": SHIFTS_AND_FLIPS},
        ],
    },
    {
        "name": "fashion-mnist-bagging",
        "preset": "fashion-mnist-bagging",  # pipelines/presets/fashion-mnist-bagging.yaml
        "set": [],
        "seeds": SEEDS,
        "metric": METRIC,
        "anchor": "Zalando's benchmark table: a tuned 2-layer MLP ~0.90 (single model)",
        "ablations": [
            {"name": "+ horizontal flips", "set": FLIPS},
            {"name": "1 member (no ensemble)", "set": ["model.members=1"]},
        ],
    },
]

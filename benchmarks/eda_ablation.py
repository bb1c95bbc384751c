"""EDA ablation on a small training set: does EDA help an MLP on hashed n-grams?

Wei & Zou (2019) report +3.0 points for CNN/RNN models trained on 500 sentences. This
trains shardtrain's text model (hashed word/char n-grams -> EmbeddingBag -> MLP) on
500 stratified SMS training messages, with and without EDA (the paper's settings for
500 sentences: n_aug=16, alpha=0.05), over 5 seeds, and reports the test accuracy and
spam F1 as mean and standard deviation. It is an experiment, not a test.

    python -m benchmarks.eda_ablation [--train-size 500] [--seeds 5] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _sparse_batch(cols: dict, rows: np.ndarray):
    """A SparseBatch of the given rows of hashed-n-gram columns (list arrays)."""
    import torch

    from shardtrain.models.inputs import SparseBatch

    ids = cols["x_ids"].take(rows)
    weights = cols["x_weights"].take(rows)
    offsets = ids.offsets.to_numpy()[:-1] - ids.offsets.to_numpy()[0]
    return SparseBatch(torch.from_numpy(ids.flatten().to_numpy().astype(np.int64)),
                       torch.from_numpy(offsets.astype(np.int64)),
                       torch.from_numpy(weights.flatten().to_numpy().astype(np.float32)))


def featurize(texts: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> dict:
    """Hashed n-grams (the sms-spam preset's settings) of a set of messages."""
    from shardtrain.features.text import TextFeatureConfig, hashed_ngrams

    return hashed_ngrams({"sample_id": ids, "text": texts, "label": labels}, TextFeatureConfig())


def train_eval(train: dict, test: dict, seed: int, epochs: int = 20) -> dict[str, float]:
    """Train the preset's EmbeddingBag MLP with AdamW + OneCycle; return test accuracy and spam F1."""
    import torch

    from shardtrain.models.text import EmbeddingBagMLP

    torch.manual_seed(seed)
    model = EmbeddingBagMLP(2 ** 16, 64, (256,), 2)
    n = len(train["label"])
    steps = epochs * -(-n // 32)
    opt = torch.optim.AdamW(model.parameters(), lr=0.03, weight_decay=1e-4, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.03, total_steps=steps)
    y = torch.from_numpy(np.asarray(train["label"], dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).numpy()
        for start in range(0, n, 32):
            rows = perm[start:start + 32]
            loss = torch.nn.functional.cross_entropy(model(_sparse_batch(train, rows)), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = model(_sparse_batch(test, np.arange(len(test["label"])))).argmax(-1).numpy()
    truth = np.asarray(test["label"])
    tp, fp, fn = [int(((pred == a) & (truth == b)).sum()) for a, b in ((1, 1), (1, 0), (0, 1))]
    return {"accuracy": float((pred == truth).mean()), "f1_spam": 2 * tp / max(2 * tp + fp + fn, 1)}


def main(argv: list[str] | None = None) -> dict:
    """Run the ablation and print/return mean and spread per arm."""
    import torch

    from shardtrain.augment.text import EDA, load_synonyms
    from shardtrain.readers.text import TextReaderOptions, read_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=500)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--n-aug", type=int, default=16)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data_dir)
    table = read_text(dataclasses.replace(TextReaderOptions(), path=str(data / "sms-spam" / "SMSSpamCollection")))
    cols = table.columns
    test_rows = np.flatnonzero(cols["split"] == 2)
    test = featurize(cols["text"][test_rows], cols["label"][test_rows], cols["sample_id"][test_rows])
    synonyms = load_synonyms(str(data / "oewn-2025" / "oewn-2025-synsets.tsv.gz"))
    results: dict[str, list] = {"no_eda": [], "eda": []}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        pool = np.flatnonzero(cols["split"] == 0)
        rng = np.random.default_rng(seed)
        # stratified subset of the training split
        picked = []
        for c in (0, 1):
            idx = pool[cols["label"][pool] == c]
            k = int(round(args.train_size * len(idx) / len(pool)))
            picked.append(rng.choice(idx, k, replace=False))
        rows = np.sort(np.concatenate(picked))
        base = {"sample_id": cols["sample_id"][rows], "text": cols["text"][rows], "label": cols["label"][rows]}
        results["no_eda"].append(train_eval(featurize(base["text"], base["label"], base["sample_id"]), test, seed))
        eda = EDA(args.alpha, args.alpha, args.alpha, args.alpha, args.n_aug, synonyms, seed)
        aug = eda.augment_batch(base)
        results["eda"].append(train_eval(featurize(aug["text"], aug["label"], aug["sample_id"]), test, seed,
                                         epochs=max(2, 20 // (args.n_aug + 1) * 2)))
    summary = {}
    for arm, runs in results.items():
        summary[arm] = {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs])),
                            "runs": [r[k] for r in runs]} for k in runs[0]}
    print(f"EDA ablation: {args.train_size} training messages, {args.seeds} seeds, n_aug={args.n_aug}, "
          f"alpha={args.alpha}, {time.perf_counter() - t0:.0f} s")
    for arm, m in summary.items():
        print(f"  {arm:7s} accuracy {m['accuracy']['mean']:.4f} ± {m['accuracy']['std']:.4f}   "
              f"spam F1 {m['f1_spam']['mean']:.4f} ± {m['f1_spam']['std']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

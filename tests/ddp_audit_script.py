"""Fit a tiny linear model with ShardDataModule under CPU DDP (gloo) with the data audit on.

Run as a script (Lightning's ``ddp`` strategy re-launches this same command line for
every rank, which inside pytest would re-run pytest):

    PYTHONPATH=. python tests/ddp_audit_script.py --train DIR --audit DIR [--devices 2]

Rank 0 merges the per-rank audits into ``DIR/data_audit.json`` at the end of fit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, fit for ``--epochs`` epochs and return 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--audit", required=True, type=Path)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", default="cpu")
    args = parser.parse_args(argv)

    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    from shardtrain.config import DataConfig
    from shardtrain.data.datamodule import ShardDataModule

    class Linear(pl.LightningModule):
        """Softmax regression on the dense features; loss weighted by ``w`` (padding counts 0)."""

        def __init__(self, width: int, classes: int) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(width, classes)

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            loss = F.cross_entropy(self.lin(batch["x"]), batch["y"], reduction="none")  # (B,)
            return (loss * batch["w"]).sum() / batch["w"].sum().clamp_min(1.0)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cfg = DataConfig(batch_size=args.batch_size, device_cache=args.cache, val_fraction=0.0, audit=True)
    dm = ShardDataModule.from_config(args.train, None, None, cfg, seed=11, audit_dir=args.audit)
    classes = len(dm.labels["label"]["classes"])
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices, strategy="ddp",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Linear(dm.feature_dim, classes), datamodule=dm)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script
    sys.exit(main())

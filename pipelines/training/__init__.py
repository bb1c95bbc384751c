"""Layer 4: the LightningModule shell, the train and evaluate stages, checkpoints and the run report."""

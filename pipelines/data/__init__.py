"""Layer 3: the ShardDataModule and the batching it is built on."""

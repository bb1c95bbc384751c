"""Layer 5: running on a Ray cluster (Ray Train launcher, job submission, local multi-node helpers)."""

"""Layer 3: the stage runner (Ray tasks or in-process) and the per-kind stage pipelines."""

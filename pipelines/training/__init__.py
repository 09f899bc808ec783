"""Training: the clip stream, the Ray Train loop, and its checkpoints (store + train-state files)."""

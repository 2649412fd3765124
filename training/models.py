"""Training runs and model versions (filled by the training issue)."""

"""Predictions and active-learning scores (filled by the active-learning issue)."""

"""Versioned datasets (filled by the dataset-versions issue)."""

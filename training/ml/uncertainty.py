"""Uncertainty scores of predicted probabilities (margin, entropy, least confidence) and picking the most uncertain.

Pure numpy so the platform's pool scoring and the active-learning benchmark rank images the same way.
"""
from __future__ import annotations

import logging

import numpy as np

_logger = logging.getLogger(__name__)

STRATEGIES = ("margin", "entropy", "least_confidence", "random")


def prediction_stats(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of an (N, C) probability array: top-1 index, confidence, margin (top1 - top2), entropy (nats)."""
    p = np.asarray(probabilities, dtype=np.float64)
    top = np.argmax(p, axis=1)
    ordered = np.sort(p, axis=1)
    confidence = ordered[:, -1]
    margin = confidence - (ordered[:, -2] if p.shape[1] > 1 else 0.0)
    # 0 * log 0 is 0: zero probabilities contribute nothing instead of NaN.
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return top, confidence, margin, entropy


def uncertainty_order(probabilities: np.ndarray, strategy: str, *, seed: int = 0) -> np.ndarray:
    """Row indices, most uncertain first (ties by row index, like the queue's ties by image id).

    Args:
        probabilities: (N, C) calibrated probabilities.
        strategy: "margin" (smallest top1 - top2 first), "entropy" (largest first), "least_confidence"
            (smallest top-1 probability first) or "random" (a seeded permutation).
        seed: for "random".
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n = len(probabilities)
    if strategy == "random":
        return np.random.default_rng(seed).permutation(n)
    _, confidence, margin, entropy = prediction_stats(probabilities)
    key = {"margin": margin, "entropy": -entropy, "least_confidence": confidence}[strategy]
    return np.lexsort((np.arange(n), key))


def select_uncertain(probabilities: np.ndarray, count: int, strategy: str, *, seed: int = 0) -> np.ndarray:
    """The row indices of the `count` most uncertain rows under `strategy` (see `uncertainty_order`)."""
    return uncertainty_order(probabilities, strategy, seed=seed)[:max(0, count)]

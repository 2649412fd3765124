"""Uncertainty scores of predicted probabilities (margin, entropy, least confidence) and picking the most uncertain
(plain top-k, or the platform's queue selection with a class cap and an exploration share).

Pure numpy so the platform's pool scoring and the active-learning benchmark rank images the same way.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict

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
    return uncertainty_order(probabilities, strategy, seed=seed)[: max(0, count)]


def select_for_queue(
    probabilities: np.ndarray,
    count: int,
    strategy: str,
    *,
    exploration: float = 0.1,
    max_class_share: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """Row indices chosen the way the platform fills its labeling queue, in queue order.

    Mirrors inference.services.queue_priorities_update, which streams candidates from the database and so
    cannot share this code: rows are taken in `uncertainty_order` (a seeded permutation for "random"),
    skipping a row whose predicted class already holds `cap = max(1, floor(max_class_share * n + 1e-9))`
    of the uncertainty picks, until `n - round(exploration * n)` are taken (n = min(count, rows)); the other
    `round(exploration * n)` are drawn uniformly from the rows not taken and placed evenly among the
    uncertainty picks. Like the platform, it returns fewer than n rows when the cap leaves too few
    candidates (e.g. a model that predicts one or two classes for everything).

    Args:
        probabilities: (N, C) calibrated probabilities; the predicted class is the top-1.
        count: how many rows to choose.
        strategy: see `uncertainty_order`.
        exploration: share of the picks drawn at random, 0..1.
        max_class_share: most uncertainty picks one predicted class may take, (0, 1].
        seed: for the random order ("random") and the exploration draw.
    """
    if not 0.0 <= exploration <= 1.0 or not 0.0 < max_class_share <= 1.0:
        raise ValueError("exploration must be in [0, 1] and max_class_share in (0, 1]")
    probabilities = np.asarray(probabilities)
    target = min(max(0, count), len(probabilities))
    n_explore = round(exploration * target)
    cap = max(1, math.floor(max_class_share * target + 1e-9))
    predicted = np.argmax(probabilities, axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    exploit: list[int] = []
    per_class: dict[int, int] = defaultdict(int)
    for row in uncertainty_order(probabilities, strategy, seed=seed):
        if len(exploit) >= target - n_explore:
            break
        if per_class[predicted[row]] >= cap:
            continue  # over-represented: the next row of another class takes the place
        per_class[predicted[row]] += 1
        exploit.append(int(row))
    rest = np.setdiff1d(np.arange(len(probabilities)), exploit)
    # A generator separate from the "random" order's, so exploration is not the order's next rows.
    explore = np.random.default_rng([seed, 1]).choice(rest, min(n_explore, len(rest)), replace=False)
    return np.array(spread_exploration(exploit, [int(row) for row in explore]), dtype=int)


def spread_exploration(exploit: list[int], explore: list[int]) -> list[int]:
    """Exploration picks placed evenly among the uncertainty picks (both orders kept), so annotators meet them
    from the start rather than only after the whole uncertain batch, which a day's labeling may never reach.
    The platform's queue (inference.services) and `select_for_queue` both order their picks with it."""
    total, merged, used = len(exploit) + len(explore), [], 0
    exploit_rows, explore_rows = iter(exploit), iter(explore)
    for rank in range(total):
        if used < round((rank + 1) * len(explore) / total):
            merged.append(next(explore_rows))
            used += 1
        else:
            merged.append(next(exploit_rows))
    return merged

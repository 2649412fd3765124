"""Uncertainty scores of predicted probabilities (margin, entropy, least confidence) and picking the most uncertain
(plain top-k, or the platform's queue selection with a class cap and an exploration share).

Pure numpy so the platform's pool scoring and the active-learning benchmark rank images the same way.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

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


def random_order(n: int, *, seed: int = 0) -> np.ndarray:
    """The "random" strategy's order of n candidates (sorted by id beforehand): a seeded permutation of 0..n-1."""
    return np.random.default_rng(seed).permutation(n)


def uncertainty_order(probabilities: np.ndarray, strategy: str, *, seed: int = 0) -> np.ndarray:
    """Row indices, most uncertain first (ties by row index, like the queue's ties by image id).

    Args:
        probabilities: (N, C) calibrated probabilities.
        strategy: "margin" (smallest top1 - top2 first), "entropy" (largest first), "least_confidence"
            (smallest top-1 probability first) or "random" (a seeded permutation, `random_order`).
        seed: for "random".
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n = len(probabilities)
    if strategy == "random":
        return random_order(n, seed=seed)
    _, confidence, margin, entropy = prediction_stats(probabilities)
    key = {"margin": margin, "entropy": -entropy, "least_confidence": confidence}[strategy]
    return np.lexsort((np.arange(n), key))


def select_uncertain(probabilities: np.ndarray, count: int, strategy: str, *, seed: int = 0) -> np.ndarray:
    """The row indices of the `count` most uncertain rows under `strategy` (see `uncertainty_order`)."""
    return uncertainty_order(probabilities, strategy, seed=seed)[: max(0, count)]


def queue_select(
    ranked: Iterable[tuple[int, int]],
    *,
    pool_size: int,
    rest: Callable[[set[int]], Sequence[int]],
    count: int,
    exploration: float,
    max_class_share: float,
    seed: int = 0,
) -> list[int]:
    """The labeling queue's picks in queue order: the class cap and the exploration draw, for the platform's queue
    (inference.services.selection, candidates streamed from the database) and `select_for_queue` (the benchmark).

    Candidates are taken from `ranked` in order, skipping one whose predicted class already holds
    `cap = max(1, floor(max_class_share * n + 1e-9))` of the uncertainty picks, until `n - round(exploration * n)`
    are taken (n = min(count, pool_size)); the other `round(exploration * n)` are drawn uniformly from `rest` and
    placed evenly among the uncertainty picks (`spread_exploration`). Fewer than n come back when the cap leaves too
    few candidates (e.g. a model that predicts one or two classes for everything).

    Args:
        ranked: (candidate, predicted class) most uncertain first; read only as far as needed, so it may stream.
        pool_size: how many candidates there are.
        rest: rest(taken) -> the candidates not in `taken`, in ascending order; called only when there is
            something to explore, so a database need not list every candidate otherwise.
        count: how many to choose.
        exploration: share of the picks drawn at random, 0..1.
        max_class_share: most uncertainty picks one predicted class may take, (0, 1].
        seed: for the exploration draw (a generator apart from `random_order`'s, so exploration is not the
            order's next rows).
    """
    if not 0.0 <= exploration <= 1.0 or not 0.0 < max_class_share <= 1.0:
        raise ValueError("exploration must be in [0, 1] and max_class_share in (0, 1]")
    target = min(max(0, count), pool_size)
    n_explore = round(exploration * target)
    cap = max(1, math.floor(max_class_share * target + 1e-9))
    exploit: list[int] = []
    per_class: dict[int, int] = defaultdict(int)
    for candidate, predicted in ranked:
        if len(exploit) >= target - n_explore:
            break
        if per_class[predicted] >= cap:
            continue  # over-represented: the next candidate of another class takes the place
        per_class[predicted] += 1
        exploit.append(candidate)
    explore: list[int] = []
    if n_explore:
        others = list(rest(set(exploit)))
        drawn = np.random.default_rng([seed, 1]).choice(len(others), min(n_explore, len(others)), replace=False)
        explore = [others[int(i)] for i in drawn]
    return spread_exploration(exploit, explore)


def select_for_queue(
    probabilities: np.ndarray,
    count: int,
    strategy: str,
    *,
    exploration: float = 0.1,
    max_class_share: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """Row indices chosen the way the platform fills its labeling queue, in queue order (`queue_select` over the
    rows in `uncertainty_order`; the predicted class is the top-1).

    Args:
        probabilities: (N, C) calibrated probabilities.
        count: how many rows to choose.
        strategy: see `uncertainty_order`.
        exploration: share of the picks drawn at random, 0..1.
        max_class_share: most uncertainty picks one predicted class may take, (0, 1].
        seed: for the random order ("random") and the exploration draw.
    """
    probabilities = np.asarray(probabilities)
    n = len(probabilities)
    predicted = np.argmax(probabilities, axis=1) if n else np.zeros(0, dtype=int)
    order = uncertainty_order(probabilities, strategy, seed=seed)
    picks = queue_select(
        ((int(row), int(predicted[row])) for row in order),
        pool_size=n,
        rest=lambda taken: [row for row in range(n) if row not in taken],
        count=count,
        exploration=exploration,
        max_class_share=max_class_share,
        seed=seed,
    )
    return np.array(picks, dtype=int)


def spread_exploration(exploit: list[int], explore: list[int]) -> list[int]:
    """Exploration picks placed evenly among the uncertainty picks (both orders kept), so annotators meet them
    from the start rather than only after the whole uncertain batch, which a day's labeling may never reach.
    `queue_select` orders its picks with it."""
    total, merged, used = len(exploit) + len(explore), [], 0
    exploit_rows, explore_rows = iter(exploit), iter(explore)
    for rank in range(total):
        if used < round((rank + 1) * len(explore) / total):
            merged.append(next(explore_rows))
            used += 1
        else:
            merged.append(next(exploit_rows))
    return merged

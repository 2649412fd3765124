"""Paired tests between classifiers (McNemar, DeLong) and percentile-bootstrap confidence intervals."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class McNemarResult:
    """b: only A correct; c: only B correct. `method` is "exact" (binomial) or "chi2_cc" (continuity-corrected)."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_from_counts(b: int, c: int, *, exact_below: int = 25) -> McNemarResult:
    """McNemar's test on the discordant counts of a paired 2x2 table.

    Exact two-sided binomial test (statistic: min(b, c)) when b + c < `exact_below`, where the chi-square
    approximation is poor; otherwise chi-square with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c).

    Args:
        b: pairs where only the first classifier is right.
        c: pairs where only the second classifier is right.
        exact_below: discordant total below which the exact test is used.
    """
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact")
    if n < exact_below:
        p = min(1.0, 2.0 * float(scipy_stats.binom.cdf(min(b, c), n, 0.5)))
        return McNemarResult(b, c, float(min(b, c)), p, "exact")
    statistic = (abs(b - c) - 1.0) ** 2 / n
    return McNemarResult(b, c, statistic, float(scipy_stats.chi2.sf(statistic, df=1)), "chi2_cc")


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray, *, exact_below: int = 25) -> McNemarResult:
    """McNemar's test for two classifiers' per-image correctness on the same images.

    Args:
        correct_a: (N,) booleans, classifier A right on image i.
        correct_b: (N,) booleans, classifier B right on image i.
        exact_below: discordant total below which the exact binomial test is used.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("correct_a and correct_b must have the same shape")
    return mcnemar_from_counts(int(np.sum(a & ~b)), int(np.sum(~a & b)), exact_below=exact_below)


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of each row of `x`, ties sharing the mean of their ranks."""
    return scipy_stats.rankdata(x, axis=-1)


def delong_placements(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast DeLong (Sun & Xu 2014): AUCs and the structural components, from midranks in O(k N log N).

    Args:
        y_true: (N,) 0/1 labels; needs both classes.
        scores: (k, N) scores of k classifiers (higher means positive).

    Returns:
        aucs (k,), v10 (k, m) per positive: fraction of negatives it outranks, v01 (k, n) per negative:
        fraction of positives that outrank it (ties count one half).
    """
    y = np.asarray(y_true).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positives, negatives = scores[:, y], scores[:, ~y]
    m, n = positives.shape[1], negatives.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs at least one positive and one negative")
    rank_pos = _midranks(positives)
    rank_neg = _midranks(negatives)
    rank_all = _midranks(np.concatenate([positives, negatives], axis=1))
    # A positive's rank among all minus its rank among positives = negatives below it (ties: one half).
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def delong_covariance(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k): S10 / m + S01 / n.

    Args:
        y_true: (N,) 0/1 labels.
        scores: (k, N) scores of k classifiers on the same images.
    """
    aucs, v10, v01 = delong_placements(y_true, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        # A variance needs two observations per group; report "unknown", not a spuriously exact zero.
        return aucs, np.full((len(aucs), len(aucs)), np.nan)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n


@dataclass(frozen=True)
class DeLongResult:
    """Two correlated AUCs on the same images, their difference, and the two-sided DeLong test."""

    auc_a: float
    auc_b: float
    difference: float
    std_error: float
    z: float
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def delong_test(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLongResult:
    """DeLong et al. (1988) test of AUC(A) = AUC(B) for two classifiers scored on the same images.

    Args:
        y_true: (N,) 0/1 labels.
        scores_a: (N,) scores of classifier A.
        scores_b: (N,) scores of classifier B.
    """
    aucs, cov = delong_covariance(y_true, np.vstack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if not math.isfinite(variance) or variance <= 1e-15:
        # Identical rankings give no evidence of a difference; otherwise the test is undefined here (too few
        # positives or negatives to estimate a variance), reported as NaN rather than as p = 0.
        same = abs(difference) < 1e-12 and math.isfinite(variance)
        return DeLongResult(
            float(aucs[0]),
            float(aucs[1]),
            difference,
            0.0 if same else math.nan,
            0.0 if same else math.nan,
            1.0 if same else math.nan,
        )
    std_error = math.sqrt(variance)
    z = difference / std_error
    p_value = float(2 * scipy_stats.norm.sf(abs(z)))
    return DeLongResult(float(aucs[0]), float(aucs[1]), difference, std_error, z, p_value)


def delong_per_class(
    labels: np.ndarray, probabilities_a: np.ndarray, probabilities_b: np.ndarray, classes: Sequence[str]
) -> dict[str, dict | None]:
    """One-vs-rest DeLong test per class; None for a class that is absent from (or is all of) `labels`.

    Args:
        labels: (N,) true class indices.
        probabilities_a: (N, C) probabilities of classifier A.
        probabilities_b: (N, C) probabilities of classifier B.
        classes: class codes, in column order.
    """
    labels = np.asarray(labels)
    result: dict[str, dict | None] = {}
    for index, code in enumerate(classes):
        positive = labels == index
        if positive.all() or not positive.any():
            result[code] = None
            continue
        result[code] = delong_test(positive, probabilities_a[:, index], probabilities_b[:, index]).to_dict()
    return result


def bootstrap_ci(
    labels: np.ndarray,
    predictions: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic(labels, predictions)` over images resampled with replacement.

    Args:
        labels: (N,) true class indices.
        predictions: (N,) predicted class indices.
        statistic: e.g. accuracy or macro-F1 of (labels, predictions).
        samples: bootstrap resamples.
        confidence: interval coverage.
        seed: resampling seed (intervals are reproducible).
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    if len(labels) == 0 or samples <= 0:
        return None
    rng = np.random.default_rng(seed)
    values = np.empty(samples)
    for i in range(samples):
        pick = rng.integers(0, len(labels), len(labels))
        values[i] = statistic(labels[pick], predictions[pick])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)

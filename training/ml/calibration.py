"""Temperature scaling (Guo et al. 2017) fitted with LBFGS, and expected calibration error."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

_logger = logging.getLogger(__name__)

# Probabilities are clipped before taking logs so a soft vote with an exact zero stays finite.
_EPS = 1e-12


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probabilities_to_logits(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities, usable as logits: softmax(log p) == p."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature)."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean NLL of the true labels."""
    labels = np.asarray(labels, dtype=np.int64)
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, _EPS, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on held-out data.

    Optimised over log T (keeps T positive without a constraint) with LBFGS and a strong-Wolfe line search.

    Args:
        logits: (N, C) held-out logits (for the ensemble: log of the soft-voted probabilities).
        labels: (N,) true class indices.
        max_iter: LBFGS iteration cap.
    """
    if len(labels) == 0:
        _logger.warning("no held-out images to fit a temperature on; using T=1")
        return 1.0
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature):
        _logger.warning("temperature fit diverged; using T=1")
        return 1.0
    # Perfectly separated held-out data drives T towards 0 (infinitely sharp); keep it in a sane range.
    return float(np.clip(temperature, 0.05, 20.0))


def _bin_indices(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # Equal-width bins (lo, hi]; a confidence of exactly 0 joins the first bin.
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_curve(
    probabilities: np.ndarray, labels: np.ndarray, *, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy, and count (empty bins: NaN, NaN, 0).

    Args:
        probabilities: (N, C) predicted probabilities.
        labels: (N,) true class indices.
        n_bins: equal-width bins over [0, 1].
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    bins = _bin_indices(confidence, n_bins)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / counts
    return mean_confidence, accuracy, counts.astype(np.int64)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins.

    Args:
        probabilities: (N, C) predicted probabilities.
        labels: (N,) true class indices.
        n_bins: equal-width bins over [0, 1].
    """
    if len(labels) == 0:
        return float("nan")
    confidence, accuracy, counts = reliability_curve(probabilities, labels, n_bins=n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - confidence[filled])) / counts.sum())

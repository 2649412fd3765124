"""Calibrate the members and their soft vote on validation, evaluate them on test, and compare them pairwise."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.ml.calibration import apply_temperature, fit_temperature, probabilities_to_logits, softmax
from training.ml.ensemble import ensemble_logits, soft_vote
from training.ml.members import TrainedMember
from training.ml.metrics import classification_metrics
from training.ml.stats import delong_per_class, mcnemar_test

_logger = logging.getLogger(__name__)

ENSEMBLE_KEY = "ensemble"


@dataclass(frozen=True)
class Calibration:
    """Temperatures fitted on validation: the ensemble's (used for predictions) and each member's (reported)."""

    temperature: float
    model_temperatures: dict[str, float]


@dataclass(frozen=True)
class TestEvaluation:
    """Test probabilities and metrics keyed by member key and ENSEMBLE_KEY (members first, ensemble last)."""

    probabilities: dict[str, np.ndarray]
    calibrated: dict[str, np.ndarray]
    metrics: dict[str, dict[str, Any]]


def labels_of(items: Sequence[tuple[Any, int]]) -> np.ndarray:
    return np.asarray([label for _, label in items], dtype=np.int64)


def calibrate(*, members: Sequence[TrainedMember], val_labels: np.ndarray, weights: Sequence[float]) -> Calibration:
    """Fit one temperature per member on its validation logits, and one on the ensemble's validation logits.

    Args:
        members: the trained members, in `config.models` order.
        val_labels: validation class indices.
        weights: soft-voting weights, one per member.
    """
    model_temperatures = {m.key: fit_temperature(m.val_logits, val_labels) for m in members}
    val_probabilities = [softmax(m.val_logits) for m in members]
    temperature = fit_temperature(ensemble_logits(val_probabilities, weights), val_labels)
    _logger.info(
        "temperatures: ensemble %.3f, members %s",
        temperature,
        ", ".join(f"{k} {t:.3f}" for k, t in model_temperatures.items()),
    )
    return Calibration(temperature=temperature, model_temperatures=model_temperatures)


def evaluate_on_test(
    *,
    members: Sequence[TrainedMember],
    calibration: Calibration,
    weights: Sequence[float],
    test_labels: np.ndarray,
    classes: Sequence[str],
    bootstrap_samples: int,
    ece_bins: int,
    seed: int,
) -> TestEvaluation:
    """Test metrics of each member and of the soft vote, before and after temperature scaling.

    Args:
        members: the trained members.
        calibration: temperatures from `calibrate`.
        weights: soft-voting weights, one per member.
        test_labels: test class indices.
        classes: class codes.
        bootstrap_samples: resamples for the confidence intervals.
        ece_bins: bins of the calibration error.
        seed: seed of the bootstrap.
    """
    probabilities = {m.key: softmax(m.test_logits) for m in members}
    calibrated = {m.key: apply_temperature(m.test_logits, calibration.model_temperatures[m.key]) for m in members}
    ensemble = soft_vote([probabilities[m.key] for m in members], weights)
    probabilities[ENSEMBLE_KEY] = ensemble
    calibrated[ENSEMBLE_KEY] = apply_temperature(probabilities_to_logits(ensemble), calibration.temperature)
    metrics = {
        key: classification_metrics(
            test_labels,
            probabilities[key],
            classes,
            calibrated_probabilities=calibrated[key],
            bootstrap_samples=bootstrap_samples,
            ece_bins=ece_bins,
            seed=seed,
        )
        for key in probabilities
    }
    return TestEvaluation(probabilities=probabilities, calibrated=calibrated, metrics=metrics)


def compare_models(
    *, labels: np.ndarray, probabilities: dict[str, np.ndarray], keys: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """McNemar (accuracy) and per-class DeLong (AUROC): the ensemble against each member, and member pairs.

    Args:
        labels: test class indices.
        probabilities: test probabilities keyed by member key and ENSEMBLE_KEY.
        keys: member keys, in order.
        classes: class codes.
    """
    pairs = [(ENSEMBLE_KEY, key) for key in keys] + [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    correct = {key: probs.argmax(axis=1) == labels for key, probs in probabilities.items()}
    return {
        "mcnemar": {f"{a}_vs_{b}": mcnemar_test(correct[a], correct[b]).to_dict() for a, b in pairs},
        "delong": {
            f"{a}_vs_{b}": delong_per_class(labels, probabilities[a], probabilities[b], classes) for a, b in pairs
        },
    }

"""Classification metrics for one classifier on one split (scikit-learn), as a JSON-ready dict."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from training.ml.calibration import expected_calibration_error, negative_log_likelihood
from training.ml.stats import bootstrap_ci

_logger = logging.getLogger(__name__)


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Share of correct predictions (NaN for no images)."""
    labels = np.asarray(labels)
    return float(np.mean(labels == np.asarray(predictions))) if len(labels) else float("nan")


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Macro F1 over the classes present in `labels` (a never-predicted class scores 0).

    Equal to sklearn's `f1_score(average="macro", labels=<classes in labels>, zero_division=0)`, written with
    bincount because the bootstrap calls it a thousand times.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if len(labels) == 0:
        return float("nan")
    size = int(max(labels.max(), predictions.max())) + 1
    true_positive = np.bincount(labels[labels == predictions], minlength=size)
    support = np.bincount(labels, minlength=size)
    predicted = np.bincount(predictions, minlength=size)
    present = support > 0
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); support > 0 keeps the denominator positive.
    return float(np.mean(2.0 * true_positive[present] / (support[present] + predicted[present])))


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def classification_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    calibrated_probabilities: np.ndarray | None = None,
    bootstrap_samples: int = 1000,
    ece_bins: int = 15,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1/AUROC, confusion matrix, ECE, bootstrap CIs.

    Macro averages run over the classes present in `labels`, so a class the split does not contain neither
    counts as 0 nor inflates the average. Per-class values that are undefined are None: recall, F1 and AUROC
    of a class absent from `labels`, precision of a class never predicted, AUROC of a class that is every label.

    Args:
        labels: (N,) true class indices.
        probabilities: (N, C) predicted probabilities (uncalibrated).
        classes: class codes in column order.
        calibrated_probabilities: (N, C) after temperature scaling, for the calibrated ECE/NLL.
        bootstrap_samples: resamples for the 95% intervals (0 skips them).
        ece_bins: equal-width confidence bins for ECE.
        seed: bootstrap seed.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(labels), len(classes)):
        raise ValueError(f"probabilities shape {probabilities.shape} does not match {len(labels)} x {len(classes)}")
    predictions = probabilities.argmax(axis=1)
    all_classes = list(range(len(classes)))
    present = sorted(set(labels.tolist()))
    per_class_p, per_class_r, per_class_f, support = precision_recall_fscore_support(
        labels, predictions, labels=all_classes, zero_division=np.nan
    )
    predicted_counts = np.bincount(predictions, minlength=len(classes))
    macro_p, macro_r, macro_f, _ = precision_recall_fscore_support(
        labels, predictions, labels=present, average="macro", zero_division=0
    )
    per_class: dict[str, dict[str, Any]] = {}
    aurocs = []
    for index, code in enumerate(classes):
        positive = labels == index
        auroc = None
        if positive.any() and not positive.all():
            auroc = float(roc_auc_score(positive, probabilities[:, index]))
            aurocs.append(auroc)
        has_support = bool(support[index])
        f1 = per_class_f[index]
        if has_support and predicted_counts[index] == 0:
            f1 = 0.0  # defined: recall is 0, precision is 0/0, and 2TP / (support + predicted) is 0
        per_class[code] = {
            "support": int(support[index]),
            "predicted": int(predicted_counts[index]),
            "precision": _number(per_class_p[index]) if predicted_counts[index] else None,
            "recall": _number(per_class_r[index]) if has_support else None,
            "f1": _number(f1) if has_support else None,
            "auroc": auroc,
        }
    result: dict[str, Any] = {
        "n": int(len(labels)),
        "accuracy": accuracy(labels, predictions),
        "macro_precision": float(macro_p),
        "macro_recall": float(macro_r),
        "macro_f1": float(macro_f),
        "macro_auroc": float(np.mean(aurocs)) if aurocs else None,
        "classes_present": [classes[i] for i in present],
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predictions, labels=all_classes).tolist(),
        "ece": expected_calibration_error(probabilities, labels, n_bins=ece_bins),
        "nll": negative_log_likelihood(probabilities, labels),
        "accuracy_ci95": bootstrap_ci(labels, predictions, accuracy, samples=bootstrap_samples, seed=seed),
        "macro_f1_ci95": bootstrap_ci(labels, predictions, macro_f1, samples=bootstrap_samples, seed=seed),
    }
    if calibrated_probabilities is not None:
        result["ece_calibrated"] = expected_calibration_error(calibrated_probabilities, labels, n_bins=ece_bins)
        result["nll_calibrated"] = negative_log_likelihood(calibrated_probabilities, labels)
    return result

"""Metrics against hand-computed values on a six-image, four-class example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from training.ml.calibration import expected_calibration_error
from training.ml.metrics import accuracy, classification_metrics, macro_f1

CLASSES = ["neutrophil", "eosinophil", "basophil", "monocyte"]
LABELS = np.array([0, 0, 0, 1, 1, 2])
# Predictions (argmax): 0, 0, 1, 1, 2, 2. monocyte (3) is never a label and never predicted.
PROBS = np.array(
    [
        [0.72, 0.18, 0.10, 0.0],
        [0.64, 0.26, 0.10, 0.0],
        [0.30, 0.52, 0.18, 0.0],
        [0.18, 0.64, 0.18, 0.0],
        [0.10, 0.38, 0.52, 0.0],
        [0.12, 0.24, 0.64, 0.0],
    ]
)


def test_classification_metrics_match_hand_computation():
    m = classification_metrics(LABELS, PROBS, CLASSES, bootstrap_samples=0)

    # Confusion: true 0 -> 0,0,1; true 1 -> 1,2; true 2 -> 2.
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # neutrophil P=2/2 R=2/3 F1=0.8; eosinophil P=1/2 R=1/2 F1=0.5; basophil P=1/2 R=1/1 F1=2/3.
    per = m["per_class"]
    assert (per["neutrophil"]["precision"], per["neutrophil"]["recall"], per["neutrophil"]["f1"]) == pytest.approx(
        (1.0, 2 / 3, 0.8)
    )
    assert (per["eosinophil"]["precision"], per["eosinophil"]["recall"], per["eosinophil"]["f1"]) == pytest.approx(
        (0.5, 0.5, 0.5)
    )
    assert (per["basophil"]["precision"], per["basophil"]["recall"], per["basophil"]["f1"]) == pytest.approx(
        (0.5, 1.0, 2 / 3)
    )
    # Macro averages run over the three classes present, not over monocyte's undefined zeros.
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # AUROC one vs rest: neutrophil and basophil perfectly ranked; eosinophil positives 0.64 and 0.38 beat
    # 4 and 3 of the 4 negatives (0.18, 0.26, 0.52, 0.24): 7/8.
    assert per["neutrophil"]["auroc"] == pytest.approx(1.0)
    assert per["eosinophil"]["auroc"] == pytest.approx(7 / 8)
    assert per["basophil"]["auroc"] == pytest.approx(1.0)
    assert m["macro_auroc"] == pytest.approx((1 + 7 / 8 + 1) / 3)
    assert m["classes_present"] == ["neutrophil", "eosinophil", "basophil"]
    assert per["monocyte"] == {
        "support": 0,
        "predicted": 0,
        "precision": None,
        "recall": None,
        "f1": None,
        "auroc": None,
    }
    # NLL of the true-class probabilities 0.72, 0.64, 0.30, 0.64, 0.38, 0.64.
    expected_nll = -(math.log(0.72) + 3 * math.log(0.64) + math.log(0.30) + math.log(0.38)) / 6
    assert m["nll"] == pytest.approx(expected_nll)


def test_expected_calibration_error_by_hand():
    # 10 bins. (0.7, 0.8]: one correct at 0.72 -> 0.28. (0.6, 0.7]: three correct at 0.64 -> 3 x 0.36.
    # (0.5, 0.6]: two wrong at 0.52 -> 2 x 0.52. ECE = (0.28 + 1.08 + 1.04) / 6 = 0.4.
    assert expected_calibration_error(PROBS, LABELS, n_bins=10) == pytest.approx(0.4)
    assert classification_metrics(LABELS, PROBS, CLASSES, bootstrap_samples=0, ece_bins=10)["ece"] == pytest.approx(0.4)


def test_a_class_with_support_but_no_predictions_has_f1_zero_and_no_precision():
    labels = np.array([0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])  # predictions 0, 0, 1
    m = classification_metrics(labels, probs, ["a", "b"], bootstrap_samples=0)
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5)
    probs_never_b = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    m = classification_metrics(labels, probs_never_b, ["a", "b"], bootstrap_samples=0)
    assert m["per_class"]["b"]["precision"] is None
    assert m["per_class"]["b"]["recall"] == 0.0
    assert m["per_class"]["b"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 * 1 / (1 + 3)) / 2)  # a: 2TP/(support+predicted) = 2/4; b: 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_macro_f1_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 8, 200))  # predicts absent classes
    present = sorted(set(labels.tolist()))
    assert macro_f1(labels, predictions) == pytest.approx(
        f1_score(labels, predictions, labels=present, average="macro", zero_division=0)
    )
    assert accuracy(labels, predictions) == pytest.approx(np.mean(labels == predictions))


def test_bootstrap_intervals_bracket_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    probs[np.arange(300), labels] += rng.random(300)  # better than chance, not perfect
    probs /= probs.sum(axis=1, keepdims=True)
    first = classification_metrics(labels, probs, ["a", "b", "c"], bootstrap_samples=300, seed=7)
    second = classification_metrics(labels, probs, ["a", "b", "c"], bootstrap_samples=300, seed=7)
    low, high = first["accuracy_ci95"]
    assert low < first["accuracy"] < high
    assert 0.02 < high - low < 0.25  # about 2 x 1.96 x sqrt(p(1-p)/300), i.e. 0.1 wide
    low_f1, high_f1 = first["macro_f1_ci95"]
    assert low_f1 < first["macro_f1"] < high_f1
    assert first["accuracy_ci95"] == second["accuracy_ci95"]
    perfect = classification_metrics(labels, np.eye(3)[labels], ["a", "b", "c"], bootstrap_samples=50)
    assert perfect["accuracy_ci95"] == (1.0, 1.0)

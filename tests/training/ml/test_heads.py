"""The light head on index vectors: it learns separable classes, its case-grouped folds never split a case, the
temperature search finds the NLL optimum, its rescoring agrees with prediction_stats, and behind a backbone it gives
the same logits as on the pooled features (what Grad-CAM then explains)."""

from __future__ import annotations

import io

import numpy as np
import timm
import torch

from training.ml.calibration import apply_temperature, fit_temperature, negative_log_likelihood
from training.ml.embedding import index_stack, shard_bytes, shard_read
from training.ml.heads import (
    fit_temperature_1d,
    grouped_folds,
    head_bytes,
    head_classifier,
    head_from_bytes,
    head_probabilities,
    rescore_stats,
    train_head,
    uncertainty_rank,
)
from training.ml.models import CellClassifier
from training.ml.uncertainty import prediction_stats, uncertainty_order


def _blobs(n: int = 600, dim: int = 32, classes: int = 4, spread: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = rng.integers(0, classes, n)
    features = (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float16)
    cases = rng.integers(0, 30, n)
    return features, labels, cases


def test_grouped_folds_keep_each_case_in_one_fold_and_balance_them():
    cases = np.repeat(np.arange(20), np.arange(1, 21))
    fold = grouped_folds(cases, folds=3, seed=1)
    for case in np.unique(cases):
        assert len(set(fold[cases == case])) == 1
    sizes = np.bincount(fold)
    assert len(sizes) == 3
    assert sizes.max() - sizes.min() <= 20
    assert grouped_folds(np.zeros(5), folds=3).max() == 0  # one case: one fold


def test_the_head_learns_separable_classes_with_honest_cross_validation():
    features, labels, cases = _blobs()
    result = train_head(features, labels, cases, num_classes=5)  # class 4 never labeled
    assert result.metrics["cv_folds"] == 3
    assert result.metrics["cv_macro_f1"] > 0.95
    assert result.metrics["labeled"] == 600
    probabilities = head_probabilities(result.head, result.temperature, features)
    assert (probabilities.argmax(axis=1) == labels).mean() > 0.98
    assert probabilities[:, 4].max() < 0.01

    # Overlapping classes: cross-validation says so instead of the training fit's near-perfect score.
    noisy, noisy_labels, noisy_cases = _blobs(n=300, spread=12.0, seed=3)
    weak = train_head(noisy, noisy_labels, noisy_cases, num_classes=4)
    in_sample = (head_probabilities(weak.head, weak.temperature, noisy).argmax(axis=1) == noisy_labels).mean()
    assert weak.metrics["cv_accuracy"] < in_sample - 0.1


def test_the_temperature_search_finds_the_nll_optimum():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3000, 6)) * 2
    labels = np.array([rng.choice(6, p=np.exp(row * 0.5) / np.exp(row * 0.5).sum()) for row in logits])
    fast, reference = fit_temperature_1d(logits, labels), fit_temperature(logits, labels)
    assert abs(fast - 2.0) < 0.3
    assert abs(fast - reference) < 0.01
    nll = negative_log_likelihood(apply_temperature(logits, fast), labels)
    assert nll <= negative_log_likelihood(apply_temperature(logits, reference), labels) + 1e-6


def test_rescoring_an_index_in_chunks_matches_prediction_stats_and_the_uncertainty_order():
    features, labels, cases = _blobs(spread=4.0)
    result = train_head(features, labels, cases, num_classes=4)
    top, confidence, margin, entropy = rescore_stats(result.head, result.temperature, features, chunk=64)
    ref_top, ref_conf, ref_margin, ref_entropy = prediction_stats(
        head_probabilities(result.head, result.temperature, features)
    )
    assert np.array_equal(top, ref_top)
    np.testing.assert_allclose(confidence, ref_conf, atol=1e-5)
    np.testing.assert_allclose(margin, ref_margin, atol=1e-5)
    np.testing.assert_allclose(entropy, ref_entropy, atol=1e-4)
    ids = np.arange(len(features)) * 7 + 3
    for strategy in ("margin", "entropy", "least_confidence"):
        order = uncertainty_rank(ids, confidence=ref_conf, margin=ref_margin, entropy=ref_entropy, strategy=strategy)
        expected = uncertainty_order(head_probabilities(result.head, result.temperature, features), strategy)
        assert np.array_equal(order, expected)


def test_a_head_round_trips_through_bytes_and_behind_a_backbone_gives_the_same_logits():
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    backbone = CellClassifier(net, name="test_efficientnet", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        pooled = backbone(images).numpy()
    labels = np.array([0, 1, 2, 0, 1, 2])
    result = train_head(pooled.astype(np.float16), labels, np.arange(6) // 2, num_classes=3)
    head, meta = head_from_bytes(head_bytes(result, classes=["a", "b", "c"], backbone={"name": "test_efficientnet"}))
    assert meta["classes"] == ["a", "b", "c"]
    assert meta["temperature"] == result.temperature
    np.testing.assert_array_equal(head.weight, result.head.weight)
    model = head_classifier(backbone, head)
    with torch.no_grad():
        logits = model(images).numpy()
    assert model.num_classes == 3
    np.testing.assert_allclose(logits, head.logits(pooled), rtol=1e-4, atol=1e-4)


def test_shards_stack_into_one_index_in_id_order_and_a_later_vector_wins():
    rng = np.random.default_rng(0)
    first = rng.normal(size=(4, 8)).astype(np.float16)
    second = rng.normal(size=(3, 8)).astype(np.float16)
    shards = [shard_bytes([1, 2, 5, 9], first), shard_bytes([3, 5, 11], second)]
    ids, matrix = index_stack((shard_read(io.BytesIO(data)) for data in shards), dim=8, count=7)
    assert ids.tolist() == [1, 2, 3, 5, 9, 11]
    assert matrix.dtype == np.float16
    np.testing.assert_array_equal(matrix[ids.tolist().index(5)], second[1])
    np.testing.assert_array_equal(matrix[0], first[0])

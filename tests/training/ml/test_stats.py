"""McNemar on known tables; DeLong against a published AUC, an independent O(n^2) implementation and Mann-Whitney."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm

from training.ml.stats import delong_covariance, delong_per_class, delong_test, mcnemar_from_counts, mcnemar_test


def test_mcnemar_chi_square_with_continuity_correction_on_agresti_table():
    # Agresti, An Introduction to Categorical Data Analysis (2nd ed., 2007), Table 8.1: presidential approval
    # of 1600 people in two surveys: 794 approve/approve, 150 approve/disapprove, 86 disapprove/approve,
    # 570 disapprove/disapprove. Discordant b = 150, c = 86 (236 >= 25: the chi-square branch).
    result = mcnemar_from_counts(150, 86)
    assert result.method == "chi2_cc"
    assert result.statistic == pytest.approx((abs(150 - 86) - 1) ** 2 / 236)  # 3969 / 236 = 16.818
    # Chi-square with one degree of freedom: P(X > x) = erfc(sqrt(x / 2)).
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(3969 / 236 / 2)), rel=1e-9)
    assert 4e-5 < result.p_value < 4.2e-5


def test_mcnemar_exact_binomial_for_few_discordant_pairs():
    # b = 2, c = 8: P(X <= 2 | n = 10, 1/2) = (1 + 10 + 45) / 1024; two-sided: 112 / 1024 = 0.109375.
    result = mcnemar_from_counts(2, 8)
    assert result.method == "exact"
    assert result.p_value == pytest.approx(112 / 1024)
    assert mcnemar_from_counts(8, 2).p_value == pytest.approx(112 / 1024)
    assert mcnemar_from_counts(5, 5).p_value == 1.0
    assert mcnemar_from_counts(0, 0).p_value == 1.0


def test_mcnemar_from_per_image_correctness():
    # 3 both right, 2 only A right, 8 only B right, 1 both wrong.
    a = np.array([1, 1, 1, 1, 1] + [0] * 8 + [0], dtype=bool)
    b = np.array([1, 1, 1, 0, 0] + [1] * 8 + [0], dtype=bool)
    result = mcnemar_test(a, b)
    assert (result.b, result.c) == (2, 8)
    assert result.p_value == pytest.approx(112 / 1024)


def test_auc_of_hanley_mcneil_ct_ratings():
    # Hanley & McNeil, Radiology 143:29-36 (1982), Table 1: 109 CT images rated 1 (definitely normal) to
    # 5 (definitely abnormal). 58 normal: 33, 6, 6, 11, 2; 51 abnormal: 3, 2, 2, 11, 33. Published AUC: 0.893.
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(58), np.ones(51)]
    aucs, cov = delong_covariance(y, np.r_[normal, abnormal][None, :].astype(float))
    assert round(float(aucs[0]), 3) == 0.893
    assert aucs[0] == pytest.approx(2642 / 2958)  # the Wilcoxon count by hand: 2642 of 51 x 58 pairs
    assert 0.02 < math.sqrt(cov[0, 0]) < 0.045  # the paper's SE is 0.032 by its own (different) approximation


def _slow_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) written out directly: psi kernel over all pairs, then V10, V01, S10, S01."""
    positives, negatives = scores[:, y == 1], scores[:, y == 0]
    k, m, n = scores.shape[0], positives.shape[1], negatives.shape[1]

    def psi(x: float, z: float) -> float:
        return 1.0 if x > z else 0.5 if x == z else 0.0

    v10 = np.array(
        [[sum(psi(positives[r, i], negatives[r, j]) for j in range(n)) / n for i in range(m)] for r in range(k)]
    )
    v01 = np.array(
        [[sum(psi(positives[r, i], negatives[r, j]) for i in range(m)) / m for j in range(n)] for r in range(k)]
    )
    aucs = v10.mean(axis=1)
    s10 = np.array([[np.sum((v10[r] - aucs[r]) * (v10[s] - aucs[s])) / (m - 1) for s in range(k)] for r in range(k)])
    s01 = np.array([[np.sum((v01[r] - aucs[r]) * (v01[s] - aucs[s])) / (n - 1) for s in range(k)] for r in range(k)])
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_delong_equals_the_direct_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(90) < 0.4).astype(int)
    # Rounded scores create many ties, the case where midranks must reproduce the 1/2 kernel.
    a = np.round(y * 0.8 + rng.normal(0, 0.6, 90), 1)
    b = np.round(y * 0.4 + rng.normal(0, 0.6, 90), 1)
    fast_aucs, fast_cov = delong_covariance(y, np.vstack([a, b]))
    slow_aucs, slow_cov = _slow_delong(y, np.vstack([a, b]))
    np.testing.assert_allclose(fast_aucs, slow_aucs, rtol=1e-12)
    np.testing.assert_allclose(fast_cov, slow_cov, rtol=1e-10, atol=1e-15)
    result = delong_test(y, a, b)
    z = (slow_aucs[0] - slow_aucs[1]) / math.sqrt(slow_cov[0, 0] + slow_cov[1, 1] - 2 * slow_cov[0, 1])
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(z)))
    # Mann-Whitney identity: AUC = U / (n1 n0), with U counting ties as one half.
    u = mannwhitneyu(a[y == 1], a[y == 0]).statistic
    assert result.auc_a == pytest.approx(u / (np.sum(y == 1) * np.sum(y == 0)))


def test_delong_detects_a_clearly_better_classifier_and_not_an_identical_one():
    rng = np.random.default_rng(5)
    y = (rng.random(400) < 0.5).astype(int)
    good = y * 2.0 + rng.normal(0, 1, 400)
    poor = y * 0.3 + rng.normal(0, 1, 400)
    better = delong_test(y, good, poor)
    assert better.auc_a > better.auc_b
    assert better.z > 0
    assert better.p_value < 1e-6
    same = delong_test(y, good, good.copy())
    assert (same.z, same.p_value) == (0.0, 1.0)


def test_delong_per_class_reports_none_for_absent_classes():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)  # class 2 never occurs
    probs_a = rng.dirichlet(np.ones(3), 60)
    probs_b = rng.dirichlet(np.ones(3), 60)
    result = delong_per_class(labels, probs_a, probs_b, ["a", "b", "c"])
    assert result["c"] is None
    assert set(result["a"]) == {"auc_a", "auc_b", "difference", "std_error", "z", "p_value"}
    assert 0 <= result["b"]["p_value"] <= 1

"""The protocol's steps against hand-computed values and scipy: regression/decision-tree imputation on complete
instances, min-max scaling, the point-biserial ranking and top-k selection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pointbiserialr

from labscreen.ml.preprocess import PointBiserialSelector, RegressionImputer, point_biserial, preprocessor

NAN = np.nan


def test_numeric_imputation_is_the_regression_on_complete_rows():
    # Complete rows follow b = 2a + 1 exactly; the two holes are filled from that line both ways.
    X = np.array([[1, 3], [2, 5], [3, 7], [4, NAN], [NAN, 11]], dtype=float)

    filled = RegressionImputer().fit(X).transform(X)

    np.testing.assert_allclose(filled[3], [4, 9])
    np.testing.assert_allclose(filled[4], [5, 11])


def test_imputation_uses_only_complete_instances_and_means_for_missing_predictors():
    # The three complete rows give c = a + b and b = c - a exactly. Row 5 misses c only: 5 + 1. Row 4 misses b
    # and c: each regression takes the other's training mean (b: 2.5, c: 5) in its place, so b = 5 - 10 and
    # c = 10 + 2.5 - filled values never feed each other.
    X = np.array([[1, 2, 3], [2, 4, 6], [3, 3, 6], [10, NAN, NAN], [5, 1, NAN]], dtype=float)

    filled = RegressionImputer().fit(X).transform(X)

    np.testing.assert_allclose(filled[4], [5, 1, 6], atol=1e-9)
    np.testing.assert_allclose(filled[3], [10, -5, 12.5], atol=1e-9)
    np.testing.assert_array_equal(filled[:3], X[:3])


def test_categorical_imputation_is_a_decision_tree():
    # sex (column 1) is 1 exactly where x > 5 on the complete rows.
    X = np.array([[1, 0], [2, 0], [3, 0], [7, 1], [8, 1], [9, 1], [8.5, NAN], [1.5, NAN]], dtype=float)

    filled = RegressionImputer(categorical=(1,)).fit(X).transform(X)

    assert filled[6, 1] == 1
    assert filled[7, 1] == 0
    assert set(np.unique(filled[:, 1])) <= {0.0, 1.0}


def test_min_max_scaling_against_hand_computed_values():
    X = np.array([[0, 10], [5, 20], [10, 30]], dtype=float)
    y = np.array([0, 1, 1])

    scaled = preprocessor(categorical=(), top_k=2, impute=True, scale=True, select=False, seed=0).fit_transform(X, y)

    np.testing.assert_allclose(scaled, [[0, 0], [0.5, 0.5], [1, 1]])


def test_point_biserial_matches_scipy():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    X = rng.standard_normal((60, 7)) + np.outer(y, [0, 0.5, -1, 0, 2, 0, 0.1])

    r, p = point_biserial(X, y)

    for j in range(X.shape[1]):
        expected = pointbiserialr(y, X[:, j])
        assert r[j] == pytest.approx(expected.statistic, abs=1e-12)
        assert p[j] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_selector_keeps_the_top_k_by_absolute_correlation():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 50)
    X = rng.standard_normal((100, 5))
    X[:, 3] -= 3 * y  # strongest, negative
    X[:, 1] += 1 * y

    selector = PointBiserialSelector(k=2).fit(X, y)

    assert selector.support_.tolist() == [1, 3]
    assert selector.transform(X).shape == (100, 2)
    assert selector.ranking_[:2].tolist() == [3, 1]


def test_a_constant_column_has_no_correlation():
    X = np.column_stack([np.ones(10), np.arange(10)])
    r, p = point_biserial(X, np.array([0, 1] * 5))
    assert r[0] == 0
    assert p[0] == 1

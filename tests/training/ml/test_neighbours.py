"""Exact cosine neighbours over a chunked float16 index (training.ml.neighbours): the same answer as a brute-force
float64 product whatever the chunk and query-block sizes, with allowed rows, skipped rows and too few rows."""

from __future__ import annotations

import numpy as np
import pytest

from training.ml.neighbours import cosine_similarities, cosine_top_k, index_center, unit_rows


def _brute(queries, matrix, allowed=None, skip=None):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    m = matrix.astype(np.float64)
    m = m / np.linalg.norm(m, axis=1, keepdims=True)
    sims = q @ m.T
    if allowed is not None:
        sims[:, ~allowed] = -np.inf
    if skip is not None:
        sims[np.arange(len(q)), skip] = -np.inf
    return sims


@pytest.fixture
def index():
    rng = np.random.default_rng(7)
    return rng.normal(size=(500, 24)).astype(np.float16), rng.normal(size=(9, 24))


@pytest.mark.parametrize(("chunk", "block"), [(32_768, 1024), (64, 4), (7, 1)])
def test_top_k_equals_the_brute_force_order_for_any_chunking(index, chunk, block):
    matrix, queries = index
    found, sims = cosine_top_k(queries, matrix, k=6, chunk=chunk, block=block)
    expected = _brute(queries, matrix)
    order = np.argsort(-expected, axis=1, kind="stable")[:, :6]
    assert np.array_equal(found, order)
    assert np.allclose(sims, np.take_along_axis(expected, order, axis=1), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()


def test_only_allowed_rows_and_never_the_skipped_one(index):
    matrix, _ = index
    allowed = np.zeros(len(matrix), dtype=bool)
    allowed[::5] = True
    rows = np.array([0, 5, 11, 499])
    found, _ = cosine_top_k(matrix[rows], matrix, k=4, allowed=allowed, skip=rows, chunk=50)
    assert allowed[found].all()
    assert not (found == rows[:, None]).any()
    expected = _brute(matrix[rows].astype(np.float64), matrix, allowed=allowed, skip=rows)
    assert np.array_equal(found, np.argsort(-expected, axis=1, kind="stable")[:, :4])


def test_an_exact_copy_is_the_nearest_and_fewer_rows_than_k_leave_gaps():
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(3, 8)).astype(np.float16)
    matrix[2] = matrix[0] * 2  # same direction, another length: cosine 1
    found, sims = cosine_top_k(matrix[:1], matrix, k=4, skip=np.array([0]))
    assert found[0, 0] == 2
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert list(found[0, 2:]) == [-1, -1]
    assert np.isneginf(sims[0, 2:]).all()


def test_similarities_of_one_vector_to_all_rows(index):
    matrix, queries = index
    assert np.allclose(cosine_similarities(queries[0], matrix, chunk=33), _brute(queries[:1], matrix)[0], atol=1e-5)
    unit = unit_rows(matrix).astype(np.float16)  # as the similar-cell look-up caches it
    assert np.allclose(cosine_similarities(queries[0], unit, unit=True), _brute(queries[:1], matrix)[0], atol=2e-3)


def test_centered_cosine_is_the_cosine_of_the_rows_less_the_mean(index):
    matrix, queries = index
    shifted = (matrix.astype(np.float32) + 3.0).astype(np.float16)  # all-positive, like pooled features
    center = index_center(shifted, chunk=77)
    assert np.allclose(center, shifted.astype(np.float64).mean(axis=0), atol=1e-4)
    found, sims = cosine_top_k(queries + 3.0, shifted, k=5, center=center, chunk=64)
    expected = _brute(queries + 3.0 - center, shifted.astype(np.float64) - center)
    order = np.argsort(-expected, axis=1, kind="stable")[:, :5]
    assert np.array_equal(found, order)
    assert np.allclose(sims, np.take_along_axis(expected, order, axis=1), atol=1e-3)
    # Less the mean, the plain cosine's uniformly high values spread out.
    _, plain = cosine_top_k(queries + 3.0, shifted, k=5)
    assert plain.min() > 0.9 > sims.min()

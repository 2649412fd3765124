"""Exact cosine nearest neighbours in the embedding index, chunked so a 1M x D float16 matrix is never converted to
float32 whole (the similar cells beside a cell, near-duplicates at import). numpy only: at these sizes one pass over
the matrix per query block costs about what loading it does."""

from __future__ import annotations

import numpy as np

# Rows of the index converted to float32 at a time, and queries multiplied against them at a time: a block of
# products is at most MATRIX_CHUNK x QUERY_BLOCK float32 (128 MB).
MATRIX_CHUNK = 32_768
QUERY_BLOCK = 1024


def unit_rows(vectors: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """float32 rows less `center` (if given), scaled to length 1 (a zero row stays zero: similar to nothing)."""
    x = np.asarray(vectors, dtype=np.float32)
    if center is not None:
        x = x - center
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def index_center(matrix: np.ndarray, *, chunk: int = MATRIX_CHUNK) -> np.ndarray:
    """(D,) float32 mean row of the index. Pooled features after a SiLU are mostly positive, so any two cells have a
    high plain cosine (distinct PBC cells' nearest neighbour about 0.93); less the mean the values spread out, but
    copies of a cell no further from distinct cells (bench/near_duplicates.py compares both)."""
    total = np.zeros(matrix.shape[1], dtype=np.float64)
    for start in range(0, len(matrix), chunk):
        total += np.asarray(matrix[start : start + chunk], dtype=np.float64).sum(axis=0)
    return (total / max(1, len(matrix))).astype(np.float32)


def cosine_similarities(
    query: np.ndarray,
    matrix: np.ndarray,
    *,
    center: np.ndarray | None = None,
    unit: bool = False,
    chunk: int = MATRIX_CHUNK,
) -> np.ndarray:
    """(N,) float32 cosine similarity of one vector to every row of `matrix` (both less `center`, if given),
    `chunk` rows converted at a time. `unit`: the rows are already of length 1 (a cached `unit_rows` matrix), so a
    look-up is one conversion and product per chunk (the norms cost twice that)."""
    q = unit_rows(np.atleast_2d(query), center)[0]
    out = np.empty(len(matrix), dtype=np.float32)
    for start in range(0, len(matrix), chunk):
        rows = matrix[start : start + chunk]
        out[start : start + chunk] = (np.asarray(rows, dtype=np.float32) if unit else unit_rows(rows, center)) @ q
    return out


def cosine_top_k(
    queries: np.ndarray,
    matrix: np.ndarray,
    *,
    k: int,
    allowed: np.ndarray | None = None,
    skip: np.ndarray | None = None,
    center: np.ndarray | None = None,
    chunk: int = MATRIX_CHUNK,
    block: int = QUERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities), each (Q, k), of the `k` rows of `matrix` most cosine-similar to each query, most
    similar first (ties: lower row first). Fewer than k eligible rows leave index -1 and similarity -inf.

    Args:
        queries: (Q, D) vectors, any float dtype.
        matrix: (N, D) vectors (the float16 index), read `chunk` rows at a time.
        k: neighbours per query.
        allowed: optional (N,) bool: only these rows may be neighbours (e.g. cells with a final label).
        skip: optional (Q,) row of `matrix` each query must not get (itself, when the queries are index rows; -1:
            none).
        center: optional (D,) vector subtracted from queries and rows before the cosine (`index_center`).
        chunk: rows of `matrix` converted to float32 at a time.
        block: queries multiplied at a time.
    """
    q = unit_rows(np.atleast_2d(queries), center)
    n_queries, n = len(q), len(matrix)
    k = max(0, k)
    best_index = np.full((n_queries, k), -1, dtype=np.int64)
    best_sim = np.full((n_queries, k), -np.inf, dtype=np.float32)
    if k <= 0 or n == 0 or n_queries == 0:
        return best_index, best_sim
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = unit_rows(matrix[start:stop], center)
        for first in range(0, n_queries, block):
            last = min(n_queries, first + block)
            sims = q[first:last] @ rows.T
            if allowed is not None:
                sims[:, ~allowed[start:stop]] = -np.inf
            if skip is not None:
                own = skip[first:last] - start
                hit = (own >= 0) & (own < stop - start)
                sims[np.nonzero(hit)[0], own[hit]] = -np.inf
            width = stop - start
            if k < width:
                top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(width), sims.shape)
            merged_index = np.concatenate([best_index[first:last], top + start], axis=1)
            merged_sim = np.concatenate([best_sim[first:last], np.take_along_axis(sims, top, axis=1)], axis=1)
            # Most similar first; among equals the lower row (stable over the row order the merge keeps).
            order = np.lexsort((np.where(merged_index < 0, n, merged_index), -merged_sim), axis=1)[:, :k]
            best_index[first:last] = np.take_along_axis(merged_index, order, axis=1)
            best_sim[first:last] = np.take_along_axis(merged_sim, order, axis=1)
    best_index[~np.isfinite(best_sim)] = -1
    return best_index, best_sim

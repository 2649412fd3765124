"""Which unlabeled cells to label next, from the embedding index: typical and diverse cells while the labels are
few (TypiClust), the most uncertain cell of each embedding cluster once a head can judge, and the budget rule that
switches between them.

Pure numpy/scikit-learn. The platform's queue (inference.services) and the active-learning benchmark
(bench/active_learning.py --learner head) call these same functions with the same seeds, so the benchmark's
figures are the platform's. Randomness comes from `np.random.default_rng`, seeded as `queue_select` seeds it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from training.ml.uncertainty import queue_select, uncertainty_order

_logger = logging.getLogger(__name__)

# TypiClust's constants (Hacohen et al. 2022): typicality over a cell's 20 nearest neighbours in its cluster, at
# most 500 clusters (beyond that k-means costs more than it adds), clusters of fewer than 5 cells are noise.
TYPICALITY_NEIGHBOURS = 20
MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
# Uncertainty with diversity: the candidates are the PREFILTER x count most uncertain cells, clustered into as
# many groups as the round's uncertainty picks; at most PER_CLUSTER picks of a group (Zhdanov 2019, Cluster-Margin).
# Measured on pbc-dev (bench/README.md): 3 needs 0.75x random's labels to 95 % of the whole pool, Zhdanov's 10
# (diversity over most of the pool) 0.91x.
PREFILTER = 3
PER_CLUSTER = 1
# The budget rule: typicality until every class seen among the labels has this many (chosen by the benchmark,
# bench/README.md "Active learning with a head").
TYPICAL_UNTIL_PER_CLASS = 10
EMBEDDING_DIMS = 64
PCA_FIT_ROWS = 10_000  # a fit on all 42,000 rows of a refresh took 10 s on one core, on 10,000 2.4 s
_CHUNK = 65_536  # rows converted to float32 at a time
# The platform's seed: `embedding_space` and, through `round_seed`, every round's selection.
SELECTION_SEED = 0


def embedding_space(
    vectors: np.ndarray, *, dims: int = EMBEDDING_DIMS, seed: int = 0, fit_rows: int = PCA_FIT_ROWS
) -> np.ndarray:
    """The index vectors as the selection measures them: L2-normalised (cosine geometry), then PCA to `dims`
    (k-means and neighbour distances cost dims, and the leading components carry the cell-type structure).

    The PCA is fitted on at most `fit_rows` rows (a seeded sample: a million cells' leading components are those of
    ten thousand) and applied chunk by chunk, so a float16 index is never copied whole as float32 (5 GB at 1M).
    `Projection` is the same map applied only to the rows a selection reads.
    """
    return np.asarray(Projection(vectors, dims=dims, seed=seed, fit_rows=fit_rows))


class Projection:
    """`embedding_space` on demand: fitted once, it projects only the rows it is indexed with.

    The uncertainty branch of `select_next` reads the vectors of its prefiltered candidates only (a few times the
    round), so at 1M images projecting the whole index (about 40 s on one core) was most of a refresh; the typical
    branch clusters every row and projects them all (`np.asarray`).
    """

    def __init__(
        self, vectors: np.ndarray, *, dims: int = EMBEDDING_DIMS, seed: int = 0, fit_rows: int = PCA_FIT_ROWS
    ) -> None:
        from sklearn.decomposition import PCA

        self.vectors = vectors
        n = len(vectors)
        self.pca = None
        if vectors.shape[1] > dims and n > dims:
            sample = (
                slice(None) if n <= fit_rows else np.sort(np.random.default_rng([seed, 5]).choice(n, fit_rows, False))
            )
            self.pca = PCA(n_components=dims, random_state=_sub_seed(seed, 3)).fit(_unit_rows(vectors[sample]))
        self.dims = dims if self.pca is not None else vectors.shape[1]

    def __len__(self) -> int:
        return len(self.vectors)

    def _project(self, rows: np.ndarray) -> np.ndarray:
        unit = _unit_rows(rows)
        return unit if self.pca is None else self.pca.transform(unit).astype(np.float32, copy=False)

    def __getitem__(self, rows) -> np.ndarray:
        """The projected vectors of `rows` (row numbers, a boolean mask or a slice)."""
        return self._project(self.vectors[rows])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        n = len(self.vectors)
        out = np.empty((n, self.dims), dtype=np.float32)
        for start in range(0, n, _CHUNK):
            out[start : start + _CHUNK] = self._project(self.vectors[start : start + _CHUNK])
        return out if dtype is None else out.astype(dtype, copy=False)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans_clusters(vectors: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """(N,) cluster ids of k-means into `k` groups (deterministic for a seed; mini-batch beyond 50,000 rows)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(vectors)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=int)
    if n > 50_000:
        model = MiniBatchKMeans(n_clusters=k, random_state=_sub_seed(seed, 4), n_init=1, batch_size=4096)
    else:
        model = KMeans(n_clusters=k, random_state=_sub_seed(seed, 4), n_init=1, max_iter=100)
    return model.fit_predict(np.asarray(vectors, dtype=np.float32)).astype(int)


def typicality(vectors: np.ndarray, *, neighbours: int = TYPICALITY_NEIGHBOURS) -> np.ndarray:
    """(N,) inverse mean distance of each row to its `neighbours` nearest other rows: high in dense regions."""
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n <= 1:
        return np.ones(n)
    k = min(neighbours, n - 1)
    squared = (x * x).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2.0 * x @ x.T, 0.0))
    np.fill_diagonal(distances, np.inf)
    nearest = np.partition(distances, k - 1, axis=1)[:, :k]
    return 1.0 / (nearest.mean(axis=1) + 1e-12)


def typical_select(
    vectors: np.ndarray,
    *,
    candidate: np.ndarray,
    count: int,
    cases: Sequence[object] | None = None,
    seed: int = 0,
    max_clusters: int = MAX_CLUSTERS,
) -> np.ndarray:
    """Rows to label next before a model can judge (TypiClust), in queue order: k-means of every row into
    (covered + count) groups, then, largest uncovered group first, its most typical candidate; spread across cases
    (a candidate whose case already gave this round its share is passed over for the next most typical one).

    Args:
        vectors: (N, D) index vectors in `embedding_space`, or a `Projection` of them.
        candidate: (N,) bool, the rows that may be picked; the others (labeled, in labeling) count as covering
            their group.
        count: how many rows to pick.
        cases: (N,) case of each row (None: no spreading).
        seed: k-means initialisation.
        max_clusters: at most this many groups; beyond it a group is covered more than once.
    """
    candidate = np.asarray(candidate, dtype=bool)
    n_candidates = int(candidate.sum())
    count = min(max(0, count), n_candidates)
    if count == 0:
        return np.zeros(0, dtype=int)
    vectors = np.asarray(vectors)  # a Projection: every row is clustered
    covered = len(vectors) - n_candidates
    clusters = kmeans_clusters(vectors, min(covered + count, max_clusters), seed=seed)
    k = int(clusters.max()) + 1
    sizes = np.bincount(clusters, minlength=k)
    labeled = np.bincount(clusters[~candidate], minlength=k)
    # Candidates of each group, most typical first (typicality within the group, as TypiClust measures it).
    ranked = []
    for c in range(k):
        rows = np.flatnonzero(clusters == c)
        score = typicality(vectors[rows])
        in_candidates = candidate[rows]
        order = np.lexsort((rows[in_candidates], -score[in_candidates]))
        ranked.append(list(rows[in_candidates][order]))
    case_of = None if cases is None else np.asarray(cases, dtype=object)
    case_share = 1
    if case_of is not None:
        case_share = max(1, math.ceil(count / max(1, len(set(case_of[candidate].tolist())))))
    per_case: dict[object, int] = {}
    picks: list[int] = []
    while len(picks) < count:
        open_groups = [c for c in range(k) if ranked[c]]
        big = [c for c in open_groups if sizes[c] >= MIN_CLUSTER_SIZE] or open_groups
        # The least covered group first; among those the largest (the densest region not yet represented).
        group = min(big, key=lambda c: (labeled[c], -sizes[c], c))
        rows = ranked[group]
        position = 0
        if case_of is not None:
            position = next((i for i, row in enumerate(rows) if per_case.get(case_of[row], 0) < case_share), 0)
        row = rows.pop(position)
        picks.append(int(row))
        labeled[group] += 1
        if case_of is not None:
            per_case[case_of[row]] = per_case.get(case_of[row], 0) + 1
    return np.array(picks, dtype=int)


def diverse_uncertain_select(
    probabilities: np.ndarray,
    vectors: np.ndarray,
    *,
    candidate: np.ndarray,
    count: int,
    strategy: str = "margin",
    exploration: float = 0.1,
    per_cluster: int = PER_CLUSTER,
    prefilter: int = PREFILTER,
    seed: int = 0,
) -> np.ndarray:
    """Rows to label next once a head can judge, in queue order: the `prefilter` x count most uncertain
    candidates clustered in embedding space into as many groups as the round's uncertainty picks, at most
    `per_cluster` picks per group (most uncertain first), and an `exploration` share drawn at random from the other
    candidates, spread among them (`training.ml.uncertainty.queue_select`, the platform's queue mechanism).

    Args:
        probabilities: (N, C) the head's probabilities for every row (only candidates' rows are read).
        vectors: (N, D) index vectors in `embedding_space`, or a `Projection` of them.
        candidate: (N,) bool, the rows that may be picked.
        count: how many rows to pick.
        strategy: margin, entropy or least_confidence (`training.ml.uncertainty.uncertainty_order`).
        exploration: share of the picks drawn at random, 0..1.
        per_cluster: most uncertainty picks of one embedding group.
        prefilter: candidates considered per uncertainty pick.
        seed: k-means initialisation and the exploration draw.
    """
    rows = np.flatnonzero(np.asarray(candidate, dtype=bool))
    target = min(max(0, count), len(rows))
    if target == 0:
        return np.zeros(0, dtype=int)
    n_exploit = target - round(exploration * target)
    order = rows[uncertainty_order(np.asarray(probabilities)[rows], strategy, seed=seed)]
    head = order[: max(n_exploit * prefilter, n_exploit)]
    # Beyond MAX_CLUSTERS groups k-means costs more than it adds; the cap then grows with the round instead.
    n_groups = min(math.ceil(n_exploit / per_cluster), MAX_CLUSTERS)
    per_cluster = math.ceil(n_exploit / n_groups) if n_groups else per_cluster
    groups = kmeans_clusters(vectors[head], n_groups, seed=seed)
    group_of = dict(zip(head.tolist(), groups.tolist(), strict=True))
    # Past the prefiltered head every candidate is a group of its own: a round that the caps leave short goes on
    # down the uncertainty order instead of coming back short.
    ranked = ((int(row), group_of.get(int(row), -1 - i)) for i, row in enumerate(order))
    picks = queue_select(
        ranked,
        pool_size=len(rows),
        rest=lambda taken: [int(r) for r in rows if int(r) not in taken],
        count=target,
        exploration=exploration,
        max_class_share=min(1.0, per_cluster / target),
        seed=seed,
    )
    if len(picks) < target:
        # The caps left too few (small groups late in the pool): the rest in uncertainty order, as annotators would
        # go on into the unprioritised queue.
        taken = set(picks)
        picks += [int(row) for row in order if int(row) not in taken][: target - len(picks)]
    return np.array(picks, dtype=int)


def min_labels_per_class(labels: Sequence[int]) -> int:
    """The fewest labels of any class seen among `labels` (0 when there are none); classes never labeled do not
    count, since a taxonomy usually lists classes a lab may never see."""
    if len(labels) == 0:
        return 0
    return int(np.unique(np.asarray(labels), return_counts=True)[1].min())


def select_next(
    vectors: np.ndarray,
    *,
    candidate: np.ndarray,
    labels: Sequence[int],
    count: int,
    probabilities: np.ndarray | None = None,
    cases: Sequence[object] | None = None,
    strategy: str = "margin",
    exploration: float = 0.1,
    typical_until: int = TYPICAL_UNTIL_PER_CLASS,
    prefilter: int = PREFILTER,
    seed: int = 0,
) -> tuple[str, np.ndarray]:
    """The platform's default selection: typical cells (`typical_select`) while a class seen among the labels has
    fewer than `typical_until` of them or there is no head yet, then uncertainty with diversity
    (`diverse_uncertain_select`). Returns (which of the two, "typical" or "uncertain", rows in queue order).

    Args:
        vectors: (N, D) index vectors in `embedding_space`, or a `Projection` of them.
        candidate: (N,) bool, the rows that may be picked.
        labels: the final labels so far (class indices).
        count: how many rows to pick.
        probabilities: (N, C) the current head's probabilities, or None before the first head.
        cases: (N,) case of each row, for spreading the typical picks.
        strategy: uncertainty measure.
        exploration: random share of the uncertainty picks.
        typical_until: labels per class the head needs before uncertainty leads.
        prefilter: candidates considered per uncertainty pick (`diverse_uncertain_select`).
        seed: k-means and exploration.
    """
    if probabilities is None or min_labels_per_class(labels) < typical_until:
        return "typical", typical_select(vectors, candidate=candidate, count=count, cases=cases, seed=seed)
    picks = diverse_uncertain_select(
        probabilities,
        vectors,
        candidate=candidate,
        count=count,
        strategy=strategy,
        exploration=exploration,
        prefilter=prefilter,
        seed=seed,
    )
    return "uncertain", picks


def round_seed(seed: int, round_: int) -> int:
    """The selection seed of round `round_` of a run seeded `seed`: the benchmark's round of a seed, the platform's
    r-th head (round 0: the cold start) of its SELECTION_SEED, so the two draw the same picks from the same inputs."""
    return seed * 100 + round_


def _sub_seed(seed: int, stream: int) -> int:
    """An int seed for scikit-learn, drawn from the platform's generator family (`default_rng([seed, stream])`)."""
    return int(np.random.default_rng([seed, stream]).integers(2**31 - 1))

"""Selection from the embedding index on small synthetic embeddings: typical cells one per dense cluster, the
diversity cap on uncertainty picks, the exploration share, the budget rule, and determinism by seed."""

from __future__ import annotations

import numpy as np
import pytest

from training.ml.selection import (
    Projection,
    diverse_uncertain_select,
    embedding_space,
    select_next,
    typical_select,
    typicality,
)

CENTRES = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])


def blobs(per_cluster: int = 30, outliers: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four tight clusters in the plane plus scattered outliers (cluster id -1); (vectors, true cluster)."""
    rng = np.random.default_rng(seed)
    points = [centre + rng.normal(0, 0.5, (per_cluster, 2)) for centre in CENTRES]
    points.append(rng.uniform(-4, 14, (outliers, 2)))
    truth = np.concatenate([np.full(per_cluster, c) for c in range(len(CENTRES))] + [np.full(outliers, -1)])
    return np.concatenate(points), truth


def margin_probabilities(margins: np.ndarray) -> np.ndarray:
    """Two-class probabilities with the given top1 - top2 margins."""
    top = 0.5 + np.asarray(margins) / 2
    return np.stack([top, 1 - top], axis=1)


def test_typical_cells_are_one_per_dense_cluster_and_near_its_centre():
    vectors, truth = blobs()

    picks = typical_select(vectors, candidate=np.ones(len(vectors), bool), count=4, seed=0)

    assert sorted(truth[picks]) == [0, 1, 2, 3]  # one cell of each dense cluster, never an outlier
    for row in picks:
        members = np.flatnonzero(truth == truth[row])
        distances = np.linalg.norm(vectors[members] - CENTRES[truth[row]], axis=1)
        # The densest cell lies near its cluster's centre: among the closest quarter of its members.
        assert np.linalg.norm(vectors[row] - CENTRES[truth[row]]) <= np.quantile(distances, 0.25)


def test_typical_selection_skips_clusters_that_labels_already_cover():
    vectors, truth = blobs()
    candidate = np.ones(len(vectors), bool)
    candidate[np.flatnonzero(truth == 2)[:3]] = False  # cluster 2 already has labels

    picks = typical_select(vectors, candidate=candidate, count=3, seed=0)

    assert sorted(truth[picks]) == [0, 1, 3]
    assert candidate[picks].all()


def test_typical_selection_spreads_picks_across_cases():
    vectors, truth = blobs(per_cluster=40, outliers=0)
    # Every cluster's densest cells belong to case "A"; the rest of each cluster to other cases.
    centre_distance = np.linalg.norm(vectors - CENTRES[np.maximum(truth, 0)], axis=1)
    cases = np.array([f"case-{i % 8}" for i in range(len(vectors))], dtype=object)
    cases[centre_distance < np.quantile(centre_distance, 0.3)] = "A"

    picks = typical_select(vectors, candidate=np.ones(len(vectors), bool), count=8, cases=cases, seed=0)
    unspread = typical_select(vectors, candidate=np.ones(len(vectors), bool), count=8, seed=0)

    # 8 picks over 9 cases: no case gives more than one, although without cases "A" gives most of them.
    assert max(list(cases[picks]).count(case) for case in set(cases[picks])) == 1
    assert list(cases[unspread]).count("A") > 1
    assert set(truth[picks]) == {0, 1, 2, 3}


def test_typicality_is_highest_in_the_dense_middle():
    vectors, truth = blobs(outliers=0)

    score = typicality(vectors[truth == 0])

    distance = np.linalg.norm(vectors[truth == 0] - CENTRES[0], axis=1)
    assert distance[np.argmax(score)] < np.median(distance)


def test_uncertainty_picks_at_most_one_per_cluster():
    vectors, truth = blobs(per_cluster=10, outliers=0)
    # Cluster 0 holds the 10 most uncertain cells, then cluster 1, 2, 3: plain margin would take 4 of cluster 0.
    margins = np.concatenate([0.01 * (1 + np.arange(10)) + 0.2 * c for c in range(4)])

    # prefilter 10: the 40 most uncertain cells (all four clusters) are the candidates.
    picks = diverse_uncertain_select(
        margin_probabilities(margins),
        vectors,
        candidate=np.ones(40, bool),
        count=4,
        exploration=0.0,
        prefilter=10,
        seed=0,
    )

    assert sorted(truth[picks]) == [0, 1, 2, 3]
    for row in picks:  # and within its cluster, the most uncertain cell
        assert margins[row] == margins[truth == truth[row]].min()
    assert list(np.argsort(margins)[:4]) == [0, 1, 2, 3]  # what plain margin would have taken: cluster 0 only


def test_the_cluster_cap_holds_for_larger_caps():
    vectors, truth = blobs(per_cluster=10, outliers=0)
    margins = np.concatenate([0.01 * (1 + np.arange(10)) + 0.2 * c for c in range(4)])

    picks = diverse_uncertain_select(
        margin_probabilities(margins),
        vectors,
        candidate=np.ones(40, bool),
        count=8,
        exploration=0.0,
        per_cluster=2,
        prefilter=5,
        seed=0,
    )

    assert sorted(truth[picks]) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_exploration_share_is_drawn_outside_the_uncertain_head_and_spread():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 4))
    margins = np.linspace(0.01, 0.99, 200)  # row order is uncertainty order
    candidate = np.ones(200, bool)

    picks = diverse_uncertain_select(
        margin_probabilities(margins), vectors, candidate=candidate, count=20, exploration=0.25, prefilter=1, seed=3
    )

    # prefilter 1: the 15 uncertainty picks are exactly the 15 most uncertain rows; 5 come from the other 185.
    explored = [i for i, row in enumerate(picks) if row >= 15]
    assert sorted(row for row in picks if row < 15) == list(range(15))
    assert len(explored) == 5
    assert explored[0] < 4  # met early in the queue, not only after the uncertain batch
    other = diverse_uncertain_select(
        margin_probabilities(margins), vectors, candidate=candidate, count=20, exploration=0.25, prefilter=1, seed=4
    )
    assert {r for r in picks if r >= 15} != {r for r in other if r >= 15}


def test_only_candidates_are_picked():
    vectors, truth = blobs()
    candidate = truth != 1  # cluster 1 is labeled or held
    margins = np.where(truth == 1, 0.0, 0.5)

    uncertain = diverse_uncertain_select(
        margin_probabilities(margins), vectors, candidate=candidate, count=10, exploration=0.2, seed=0
    )
    typical = typical_select(vectors, candidate=candidate, count=10, seed=0)

    assert candidate[uncertain].all()
    assert candidate[typical].all()
    assert len(set(uncertain)) == len(set(typical)) == 10


def test_budget_rule_typical_until_every_seen_class_has_enough_labels():
    vectors, truth = blobs()
    probabilities = margin_probabilities(np.linspace(0, 1, len(vectors)))
    candidate = np.ones(len(vectors), bool)

    before_head, _ = select_next(vectors, candidate=candidate, labels=[], count=4, probabilities=None)
    few, _ = select_next(
        vectors, candidate=candidate, labels=[0] * 12 + [1] * 3, count=4, probabilities=probabilities, typical_until=5
    )
    enough, _ = select_next(
        vectors, candidate=candidate, labels=[0] * 12 + [1] * 5, count=4, probabilities=probabilities, typical_until=5
    )

    assert (before_head, few, enough) == ("typical", "typical", "uncertain")


@pytest.mark.parametrize("labels", [[], [0] * 10 + [1] * 10])
def test_selection_is_deterministic_by_seed(labels):
    vectors, _ = blobs(per_cluster=60)
    space = embedding_space(np.concatenate([vectors, np.random.default_rng(1).normal(size=(len(vectors), 70))], 1))
    probabilities = margin_probabilities(np.random.default_rng(2).uniform(size=len(vectors)))
    candidate = np.ones(len(vectors), bool)

    def pick(seed):
        return select_next(
            space,
            candidate=candidate,
            labels=labels,
            count=12,
            probabilities=probabilities,
            typical_until=10,
            seed=seed,
        )

    assert space.shape == (len(vectors), 64)
    mode, first = pick(7)
    assert mode == ("typical" if not labels else "uncertain")
    assert list(pick(7)[1]) == list(first)
    if labels:  # the exploration draw follows the seed
        assert any(list(pick(seed)[1]) != list(first) for seed in (8, 9, 10))


def test_a_round_that_the_caps_cannot_fill_is_topped_up_in_uncertainty_order():
    vectors, _ = blobs(per_cluster=10, outliers=0)
    margins = np.linspace(0.01, 0.99, 40)

    picks = diverse_uncertain_select(
        margin_probabilities(margins),
        vectors,
        candidate=np.ones(40, bool),
        count=40,
        exploration=0.0,
        per_cluster=15,
        seed=0,
    )

    # 3 groups over 4 blobs of 10 (20, 10, 10) capped at 14 take 34; the other 6 follow, none twice.
    assert sorted(picks) == list(range(40))


def test_the_embedding_space_of_a_large_index_is_fitted_on_a_sample_and_keeps_its_geometry():
    vectors, truth = blobs(per_cluster=60, outliers=0)
    wide = np.concatenate([vectors, np.random.default_rng(1).normal(size=(len(vectors), 70))], 1).astype(np.float16)

    whole = embedding_space(wide, dims=8)
    sampled = embedding_space(wide, dims=8, fit_rows=len(wide) // 4)

    assert sampled.shape == whole.shape == (len(wide), 8)
    assert sampled.dtype == np.float32
    assert not np.allclose(sampled, whole)  # the sample gave other components
    assert np.array_equal(embedding_space(wide, dims=8, fit_rows=len(wide) // 4), sampled)  # seeded
    # Both keep the clusters apart: every cell is nearer its own cluster's centre than any other's.
    for space in (whole, sampled):
        centres = np.stack([space[truth == c].mean(axis=0) for c in np.unique(truth)])
        nearest = np.argmin(((space[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
        assert (nearest == truth).mean() > 0.95


def test_a_projection_reads_only_the_rows_it_is_asked_for_and_selects_as_the_whole_space_does():
    rng = np.random.default_rng(7)
    wide = np.concatenate([rng.normal(size=(600, 8)) * 3, rng.normal(size=(600, 70))], 1).astype(np.float16)
    lazy = Projection(wide, dims=8)
    whole = embedding_space(wide, dims=8)
    rows = np.array([5, 3, 599, 0])
    assert len(lazy) == len(wide)
    assert np.allclose(lazy[rows], whole[rows], atol=1e-5)
    assert np.allclose(np.asarray(lazy), whole, atol=1e-6)
    probabilities = rng.dirichlet(np.ones(4), size=len(wide))
    candidate = np.ones(len(wide), dtype=bool)
    candidate[:80] = False
    labels = np.arange(80) % 4
    for typical_until in (0, 100):  # the uncertainty branch and the typical branch
        picked = [
            select_next(
                space,
                candidate=candidate,
                labels=labels,
                count=40,
                probabilities=probabilities,
                typical_until=typical_until,
                seed=3,
            )
            for space in (lazy, whole)
        ]
        assert picked[0][0] == picked[1][0]
        assert np.array_equal(picked[0][1], picked[1][1])

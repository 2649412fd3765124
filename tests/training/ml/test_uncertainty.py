"""The platform's queue selection in numpy: class cap on the uncertainty picks, exploration share, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from training.ml.uncertainty import STRATEGIES, select_for_queue, select_uncertain, uncertainty_order


def skewed_pool() -> np.ndarray:
    """40 rows over 4 classes: the 20 most uncertain (margins 0.01..0.20) all predicted class 0, then 20
    confident rows cycling through classes 1, 2 and 3."""
    rows = []
    for i in range(20):
        top = 0.5 + 0.005 * (i + 1)
        rows.append([top, 1.0 - top, 0.0, 0.0])
    for i in range(20):
        row = [0.01, 0.01, 0.01, 0.01]
        row[1 + i % 3] = 0.97
        rows.append(row)
    return np.array(rows)


def test_no_predicted_class_takes_more_than_the_cap():
    probabilities = skewed_pool()

    picks = select_for_queue(probabilities, 10, "margin", exploration=0.0, max_class_share=0.3)

    predicted = probabilities[picks].argmax(axis=1)
    assert len(picks) == 10
    assert (predicted == 0).sum() == 3  # floor(0.3 * 10)
    # The capped class keeps its three most uncertain rows; the places go to the next rows of other classes.
    assert sorted(picks[predicted == 0]) == [0, 1, 2]
    assert sorted(picks[predicted != 0]) == list(range(20, 27))


def test_exploration_share_is_drawn_from_outside_the_uncertainty_picks():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(5), size=200)
    top = set(uncertainty_order(probabilities, "entropy")[:16].tolist())

    picks = select_for_queue(probabilities, 20, "entropy", exploration=0.2, max_class_share=1.0, seed=4)

    explored = [row for row in picks.tolist() if row not in top]
    assert len(picks) == len(set(picks.tolist())) == 20
    assert set(picks.tolist()) >= top  # 20 - round(0.2 * 20) uncertainty picks
    assert len(explored) == 4
    # Spread through the queue, so annotators meet them before the end of the batch.
    assert picks.tolist().index(explored[0]) < 10


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_without_exploration_and_cap_it_is_plain_top_k(strategy):
    probabilities = np.random.default_rng(1).dirichlet(np.ones(4), size=50)

    picks = select_for_queue(probabilities, 12, strategy, exploration=0.0, max_class_share=1.0, seed=7)

    np.testing.assert_array_equal(picks, select_uncertain(probabilities, 12, strategy, seed=7))


def test_same_seed_same_picks_other_seed_other_exploration():
    probabilities = np.random.default_rng(2).dirichlet(np.ones(4), size=100)

    first = select_for_queue(probabilities, 20, "margin", exploration=0.5, seed=3)

    np.testing.assert_array_equal(first, select_for_queue(probabilities, 20, "margin", exploration=0.5, seed=3))
    assert set(first.tolist()) != set(select_for_queue(probabilities, 20, "margin", exploration=0.5, seed=4).tolist())


def test_count_beyond_the_pool_takes_each_row_once():
    probabilities = np.random.default_rng(3).dirichlet(np.ones(3), size=6)

    picks = select_for_queue(probabilities, 50, "margin", exploration=0.5, max_class_share=1.0)

    assert sorted(picks.tolist()) == list(range(6))


def test_cap_with_one_predicted_class_returns_fewer_like_the_platform():
    probabilities = np.tile([0.7, 0.2, 0.1], (30, 1))

    picks = select_for_queue(probabilities, 10, "margin", exploration=0.1, max_class_share=0.3)

    assert len(picks) == 3 + 1  # the cap's 3 uncertainty picks and round(0.1 * 10) exploration pick


def test_bad_shares_are_refused():
    with pytest.raises(ValueError, match="max_class_share"):
        select_for_queue(np.eye(3), 2, "margin", max_class_share=0.0)

"""The active-learning order of the labeling queue, written as CellImage.priority: from the embedding index with
training.ml.selection.select_next (the cold start and a head's queue: the benchmark's selection), or a fully trained
version's stored predictions with the class cap and exploration draw of training.ml.uncertainty.queue_select."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.db import transaction

from annotation.models import CellImage, LabelStatus
from inference.errors import SelectionRefused
from inference.models import Prediction
from inference.selectors import al_settings_get
from training.ml.selection import SELECTION_SEED, Projection, round_seed, select_next
from training.ml.uncertainty import STRATEGIES, queue_select, random_order
from training.models import ModelVersion

# The uncertainty order of each strategy as a database ordering: most uncertain first, ties by image id (the
# order training.ml.uncertainty.uncertainty_order gives rows sorted by image id).
_UNCERTAINTY_ORDER = {
    "margin": ("margin", "image_id"),
    "entropy": ("-entropy", "image_id"),
    "least_confidence": ("confidence", "image_id"),
}


def priorities_write(*, chosen: list[int]) -> int:
    """Give the chosen images descending priorities (first chosen highest) and every other image 0."""
    n = len(chosen)
    with transaction.atomic():
        # One UPDATE resets the rest.
        CellImage.objects.exclude(priority=0.0).update(priority=0.0)
        CellImage.objects.bulk_update(
            [CellImage(id=image_id, priority=float(n - rank)) for rank, image_id in enumerate(chosen)],
            ["priority"],
            batch_size=500,
        )
    return n


def queue_priorities_select(
    *,
    ids: np.ndarray,
    vectors: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray,
    cases: np.ndarray,
    round_: int,
    probabilities: np.ndarray | None = None,
) -> tuple[str, list[int]]:
    """Order the queue from the embedding index with `select_next` (typical cells while a class has fewer than
    TYPICAL_UNTIL_PER_CLASS final labels or there is no head, then uncertainty with diversity), with the admin's
    strategy, exploration and queue length, and the benchmark's seeding; returns (the branch, image ids in queue
    order).

    Args:
        ids: (N,) image ids of the index rows.
        vectors: (N, D) their index vectors.
        candidate: (N,) bool, the images that still need labels.
        labels: class indices (the head's columns) of the final labels among the rows.
        cases: (N,) case id of each row (-1: none; such a cell is a case of its own).
        round_: which selection this is (0: the cold start; r: the r-th head), for `round_seed`.
        probabilities: (N, C) the head's calibrated probabilities, None before a head.
    """
    strategy, exploration, _, top_n = _selection_settings(
        strategy=None, exploration=None, max_class_share=None, top_n=None
    )
    ids = np.asarray(ids, dtype=np.int64)
    cases = np.where(np.asarray(cases) >= 0, cases, -ids - 1)
    mode, picks = select_next(
        Projection(vectors, seed=SELECTION_SEED),
        candidate=candidate,
        labels=labels,
        count=top_n,
        probabilities=probabilities,
        cases=cases,
        strategy=strategy,
        exploration=exploration,
        seed=round_seed(SELECTION_SEED, round_),
    )
    chosen = ids[picks].tolist()
    priorities_write(chosen=chosen)
    return mode, chosen


def _selection_settings(
    *, strategy: str | None, exploration: float | None, max_class_share: float | None, top_n: int | None
) -> tuple[str, float, float, int]:
    # None reads the admin's ActiveLearningSettings.
    chosen_settings = al_settings_get()
    strategy = chosen_settings.strategy if strategy is None else strategy
    exploration = float(chosen_settings.exploration if exploration is None else exploration)
    max_class_share = float(chosen_settings.max_class_share if max_class_share is None else max_class_share)
    top_n = int(chosen_settings.top_n if top_n is None else top_n)
    if strategy not in STRATEGIES:
        raise SelectionRefused(f"Unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    if not 0.0 <= exploration <= 1.0 or not 0.0 < max_class_share <= 1.0 or top_n < 0:
        raise SelectionRefused("exploration must be in [0, 1], max_class_share in (0, 1] and top_n >= 0.")
    return strategy, exploration, max_class_share, top_n


def queue_priorities_update(
    *,
    model_version: ModelVersion,
    strategy: str | None = None,
    exploration: float | None = None,
    max_class_share: float | None = None,
    top_n: int | None = None,
    seed: int = 0,
) -> list[int]:
    """Order the labeling queue by the active version's uncertainty; returns the chosen image ids in queue order.

    Among images that still need labels and have a prediction of `model_version`, the most uncertain ones
    (strategy: margin, entropy, least_confidence or random) are picked until `top_n`, skipping a candidate
    whose predicted class already holds `max_class_share` of the picks; an `exploration` share of the
    picks is drawn at random from the rest. The chosen get priority top_n - rank; every other image 0.
    None arguments read the admin's ActiveLearningSettings. The same inputs and seed choose what
    `training.ml.uncertainty.select_for_queue` chooses for the candidates' probabilities in image-id order.

    Args:
        model_version: the ACTIVE version (predictions of other versions never count).
        strategy: uncertainty measure.
        exploration: share of the picks drawn at random, 0..1.
        max_class_share: most picks one predicted class may take, 0..1.
        top_n: how many images get a priority.
        seed: makes the random parts reproducible.
    """
    strategy, exploration, max_class_share, top_n = _selection_settings(
        strategy=strategy, exploration=exploration, max_class_share=max_class_share, top_n=top_n
    )
    model_version.refresh_from_db(fields=["status"])
    if model_version.status != ModelVersion.Status.ACTIVE:
        raise SelectionRefused(f"Model version {model_version.pk} is not active; only the active one sets priorities.")

    candidates = Prediction.objects.filter(model_version=model_version, image__label_status=LabelStatus.NEEDS_LABELS)
    ranked: Iterable[tuple[int, int]]
    if strategy == "random":
        rows = list(candidates.order_by("image_id").values_list("image_id", "predicted_class_id"))
        ranked = (rows[int(i)] for i in random_order(len(rows), seed=seed))
    else:
        # Streamed from the database in uncertainty order; usually only the head is read.
        ranked = (
            candidates.order_by(*_UNCERTAINTY_ORDER[strategy])
            .values_list("image_id", "predicted_class_id")
            .iterator(chunk_size=2000)
        )
    chosen = queue_select(
        ranked,
        pool_size=candidates.count(),
        rest=lambda taken: sorted(set(candidates.values_list("image_id", flat=True)) - taken),
        count=top_n,
        exploration=exploration,
        max_class_share=max_class_share,
        seed=seed,
    )
    priorities_write(chosen=chosen)
    return chosen

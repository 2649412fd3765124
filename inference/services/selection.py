"""The active-learning order of the labeling queue: the ACTIVE version's uncertainty, with the class cap and the
exploration draw of training.ml.uncertainty.queue_select (the benchmark's selection), written as CellImage.priority."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.db import transaction

from annotation.models import CellImage, LabelStatus
from inference.errors import SelectionRefused
from inference.models import Prediction
from inference.selectors import al_settings_get
from training.ml.heads import uncertainty_rank
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


def queue_priorities_from_scores(
    *,
    image_ids: np.ndarray,
    predicted_class_ids: np.ndarray,
    confidence: np.ndarray,
    margin: np.ndarray,
    entropy: np.ndarray,
    seed: int = 0,
) -> list[int]:
    """`queue_priorities_update` for scores held in memory (a refreshed head's rescoring of the whole index, before
    any Prediction row is written): the same order (ties by image id), class cap, exploration draw and settings.

    Args:
        image_ids: the candidates (images that still need labels).
        predicted_class_ids: CellClass id of each candidate's top-1.
        confidence, margin, entropy: each candidate's calibrated uncertainty scores.
        seed: makes the random parts reproducible.
    """
    strategy, exploration, max_class_share, top_n = _selection_settings(
        strategy=None, exploration=None, max_class_share=None, top_n=None
    )
    image_ids = np.asarray(image_ids, dtype=np.int64)
    order = uncertainty_rank(
        image_ids, confidence=confidence, margin=margin, entropy=entropy, strategy=strategy, seed=seed
    )
    chosen = queue_select(
        ((int(image_ids[row]), int(predicted_class_ids[row])) for row in order),
        pool_size=len(image_ids),
        rest=lambda taken: sorted(set(image_ids.tolist()) - taken),
        count=top_n,
        exploration=exploration,
        max_class_share=max_class_share,
        seed=seed,
    )
    priorities_write(chosen=chosen)
    return chosen

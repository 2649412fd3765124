"""The labeling queue's order while no model is active: typical, diverse cells from the embedding index (TypiClust,
training.ml.selection) once it holds every image that needs labels, else the first labels spread across cases at
random (also the admin's choice, ActiveLearningSettings.cold_start)."""

from __future__ import annotations

import random

import numpy as np

from annotation.models import CellImage, LabelStatus
from inference.models import ActiveLearningSettings, EmbeddingSpace
from inference.selectors import al_settings_get
from inference.services.heads import NEEDS, image_table
from inference.services.index import index_load, index_pool, index_spec_for
from inference.services.selection import priorities_write, queue_priorities_select


def queue_priorities_cold_start(*, seed: int = 0) -> tuple[str, list[int]]:
    """Without an active model: the typical cells of the bundled backbone's index (`queue_priorities_typical`) when
    the settings ask for them and the index covers the pool, else `queue_priorities_stratified`; returns ("typical"
    or "stratified", image ids in queue order).

    Args:
        seed: the stratified order's seed.
    """
    if al_settings_get().cold_start == ActiveLearningSettings.ColdStart.TYPICAL:
        chosen = queue_priorities_typical()
        if chosen is not None:
            return "typical", chosen
    return "stratified", queue_priorities_stratified(seed=seed)


def queue_priorities_typical() -> list[int] | None:
    """The cold start from the index (`queue_priorities_select` without a head, round 0): None, the queue untouched,
    while an image that needs labels is not in the index yet (its embedding pass ends by calling this again)."""
    space = EmbeddingSpace.objects.filter(key=index_spec_for(None).key).first()
    pending = CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS)
    if space is None or index_pool(space=space).filter(label_status=LabelStatus.NEEDS_LABELS).exists():
        return None
    if not pending.exists():
        priorities_write(chosen=[])
        return []
    ids, matrix = index_load(space=space)
    table = image_table()
    present, rows = table.rows_of(ids)
    _, chosen = queue_priorities_select(
        ids=ids[present],
        vectors=matrix[present],
        candidate=table.status[rows] == NEEDS,
        labels=np.zeros(0, dtype=np.int64),
        cases=table.case[rows],
        round_=0,
    )
    return chosen


def queue_priorities_stratified(*, seed: int = 0) -> list[int]:
    """A stratified random order across cases (round-robin over cases in random order, random within each case), so
    the first labels cover many patients; returns image ids in queue order.

    Args:
        seed: makes the order reproducible.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible order, not a secret
    by_case: dict[int | None, list[int]] = {}
    pending = CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS).order_by("id")
    for image_id, case_id in pending.values_list("id", "case_id"):
        by_case.setdefault(case_id, []).append(image_id)
    cases = sorted(by_case, key=lambda case: (case is None, case or 0))
    rng.shuffle(cases)
    queues = []
    for case in cases:
        images = by_case[case]
        rng.shuffle(images)
        queues.append(images)
    chosen = []
    for rank in range(max((len(q) for q in queues), default=0)):
        chosen.extend(q[rank] for q in queues if rank < len(q))
    priorities_write(chosen=chosen)
    return chosen

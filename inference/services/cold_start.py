"""The labeling queue's order while no model is active: the first labels spread across cases."""

from __future__ import annotations

import random

from annotation.models import CellImage, LabelStatus
from inference.services.selection import priorities_write


def queue_priorities_cold_start(*, seed: int = 0) -> list[int]:
    """Without an active model: a stratified random order across cases (round-robin over cases in random order,
    random within each case), so the first labels cover many patients; returns image ids in queue order.

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

"""Recording near-duplicate cells (annotation.models.NearDuplicate): called by inference after an embedding pass, the
only floor that can measure them; annotation and releases read them."""

from __future__ import annotations

from collections.abc import Iterable

from annotation.models import NearDuplicate


def near_duplicates_record(*, pairs: Iterable[tuple[int, int, float]], space_key: str) -> int:
    """Record (image id, image id, cosine similarity) pairs, each once whichever way round it comes (the later cell
    is `image`); a pair already recorded keeps its row. Returns the pairs given that were new."""
    rows: dict[tuple[int, int], NearDuplicate] = {}
    for first, second, similarity in pairs:
        if first == second:
            continue
        later, earlier = max(first, second), min(first, second)
        rows.setdefault(
            (later, earlier),
            NearDuplicate(image_id=later, duplicate_of_id=earlier, similarity=float(similarity), space_key=space_key),
        )
    if not rows:
        return 0
    recorded = NearDuplicate.objects.filter(image_id__in={later for later, _ in rows})
    known = set(recorded.values_list("image_id", "duplicate_of_id"))
    new = [row for key, row in rows.items() if key not in known]
    NearDuplicate.objects.bulk_create(new, ignore_conflicts=True)  # a pass running beside this one may add it too
    return len(new)

"""Re-ordering the labeling queue now by whichever rule applies: an active head's selection from the index, a fully
trained version's stored predictions, or the cold start (the worker side of the Apply now button)."""

from __future__ import annotations

from inference.services.cold_start import queue_priorities_cold_start
from inference.services.heads import head_queue_order
from inference.services.selection import queue_priorities_update
from training.selectors import model_version_active


def queue_priorities_refresh() -> tuple[str, list[int]]:
    """Re-order the labeling queue now with the current settings: by an active head from the index, by a fully
    trained active version's predictions, or by the cold start when no version is active; returns (what ordered it:
    "typical" or "uncertain" for a head, "active" for a trained version, "cold start: typical" or "cold start:
    stratified", the chosen image ids)."""
    version = model_version_active()
    if version is None:
        mode, chosen = queue_priorities_cold_start()
        return f"cold start: {mode}", chosen
    if version.is_head:
        return head_queue_order(version=version)
    return "active", queue_priorities_update(model_version=version)

"""Re-ordering the labeling queue now by whichever rule applies: the active version's selection or the cold start
(the worker side of the Apply now button)."""

from __future__ import annotations

from inference.services.cold_start import queue_priorities_cold_start
from inference.services.selection import queue_priorities_update
from training.selectors import model_version_active


def queue_priorities_refresh() -> tuple[str, list[int]]:
    """Re-order the labeling queue now: by the active version's predictions and the current settings, or by the
    cold start when no version is active; returns ("active" or "cold start", the chosen image ids)."""
    version = model_version_active()
    if version is None:
        return "cold start", queue_priorities_cold_start()
    return "active", queue_priorities_update(model_version=version)

"""Reads for annotation: taxonomy, images, batches."""
from __future__ import annotations

from annotation.models import CellImage


def image_count() -> int:
    return CellImage.objects.count()

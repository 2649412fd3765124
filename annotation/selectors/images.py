"""Reads for annotation: taxonomy, cases, cell images, import batches and their per-file reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.shortcuts import get_object_or_404

from annotation.models import (
    Case,
    CellClass,
    CellImage,
    ImageFileProblem,
    ImportBatch,
    ImportItem,
    LabelStatus,
    NearDuplicate,
)
from annotation.selectors.blinding import images_hidden_from
from core.jobs import UNFINISHED, job_progress


class ImageStatus(StrEnum):
    """Where an image stands in the labeling loop, as the image list filters it."""

    UNLABELED = "unlabeled"  # still needs expert labels
    CONSENSUS = "consensus"  # two different labels, waiting for an adjudicator
    FINAL = "final"


IMAGE_STATUS_LABELS = {
    ImageStatus.UNLABELED: "Needs labels",
    ImageStatus.CONSENSUS: "In consensus",
    ImageStatus.FINAL: "Final label",
}
_LABEL_STATUS = {
    ImageStatus.UNLABELED: LabelStatus.NEEDS_LABELS,
    ImageStatus.CONSENSUS: LabelStatus.CONSENSUS,
    ImageStatus.FINAL: LabelStatus.FINAL,
}


@dataclass(frozen=True)
class ImageStats:
    total: int
    unlabeled: int
    consensus: int
    final: int


def image_count() -> int:
    return CellImage.objects.count()


def image_stats() -> ImageStats:
    counts = CellImage.objects.aggregate(
        total=Count("id"),
        unlabeled=Count("id", filter=Q(label_status=LabelStatus.NEEDS_LABELS)),
        consensus=Count("id", filter=Q(label_status=LabelStatus.CONSENSUS)),
        final=Count("id", filter=Q(label_status=LabelStatus.FINAL)),
    )
    return ImageStats(**counts)


def taxonomy_list(*, active_only: bool = False) -> QuerySet[CellClass]:
    classes = CellClass.objects.all()
    return classes.filter(is_active=True) if active_only else classes


def case_list() -> QuerySet[Case]:
    return Case.objects.all()


def image_list(
    *,
    case: Case | None = None,
    batch: ImportBatch | None = None,
    reference_label: CellClass | None = None,
    status: ImageStatus | None = None,
    hidden_from=None,
) -> QuerySet[CellImage]:
    """Images in import order, with everything the list pages and the API print joined in; without the cells hidden
    from `hidden_from` (annotation.selectors.blinding) when a person lists them."""
    images = CellImage.objects.select_related(
        "case", "batch", "reference_label", "analyzer_class", "final_label"
    ).order_by("id")
    if case is not None:
        images = images.filter(case=case)
    if batch is not None:
        images = images.filter(batch=batch)
    if reference_label is not None:
        images = images.filter(reference_label=reference_label)
    if status is not None:
        images = images.filter(label_status=_LABEL_STATUS[status])
    if hidden_from is not None:
        images = images.exclude(pk__in=images_hidden_from(user=hidden_from).values("pk"))
    return images


def image_get(*, image_id: int) -> CellImage:
    """The image with its relations; Http404 (which pages and DRF both answer with 404) if absent."""
    return get_object_or_404(image_list(), pk=image_id)


def image_file_path(*, image: CellImage, thumbnail: bool) -> str:
    """Storage path to stream: the thumbnail falls back to the full image when none was made."""
    if thumbnail and image.thumbnail:
        return image.thumbnail
    return image.file


def image_file_problem_list() -> QuerySet[ImageFileProblem]:
    """Cells whose stored file could not be served, newest problem first, with the batch it came in."""
    return ImageFileProblem.objects.select_related("image__batch").order_by("-detected_at", "-id")


def image_file_problem_count() -> int:
    return ImageFileProblem.objects.count()


def batch_list() -> QuerySet[ImportBatch]:
    return ImportBatch.objects.select_related("requested_by").order_by("-requested_at", "-id")


def batch_get(*, batch_id: int) -> ImportBatch:
    return get_object_or_404(batch_list(), pk=batch_id)


def batch_items(*, batch: ImportBatch, outcome: str | None = None) -> QuerySet[ImportItem]:
    """The per-file report of a batch, in processing order, optionally one outcome only."""
    items = ImportItem.objects.filter(batch=batch).select_related("image").order_by("id")
    if outcome:
        items = items.filter(outcome=outcome)
    return items


def batch_progress(*, batch: ImportBatch) -> dict[str, Any]:
    """The common job progress (core.jobs.job_progress) and the batch's own counts: what the batch page polls."""
    return job_progress(batch) | {
        "imported": batch.imported,
        "duplicates": batch.duplicates,
        "rejected": batch.rejected,
        "skipped": batch.skipped,
        "near_duplicates": batch_near_duplicates(batch=batch).count(),
    }


def batch_near_duplicates(*, batch: ImportBatch, hidden_from=None) -> QuerySet[NearDuplicate]:
    """The near-duplicates this batch brought: pairs whose later cell it imported (the earlier one may be from any
    import, this one included), most similar first. Found after the batch's embedding pass, so none before.
    `hidden_from`: leave out pairs with a cell hidden from that user (the pair would say what the other cell is)."""
    pairs = NearDuplicate.objects.filter(image__batch=batch).select_related("image", "duplicate_of")
    if hidden_from is not None:
        hidden = images_hidden_from(user=hidden_from)
        pairs = pairs.exclude(image__in=hidden).exclude(duplicate_of__in=hidden)
    return pairs


def batch_active_count() -> int:
    """Imports still queued or running, for the admin's home tile."""
    return ImportBatch.objects.filter(status__in=UNFINISHED).count()

"""The labeling queue: hand out cells under a lease, take blind labels, skip, undo.

Every image needs HEMALOOP_LABELS_PER_IMAGE (default 2) live labels from different annotators.
Correctness under many annotators rests on three things: the image row is locked
(`SELECT ... FOR UPDATE`, `SKIP LOCKED` in the queue) while a slot is taken, the live-label counter
on the image is only changed under that lock, and a partial unique constraint forbids a second live
label by the same annotator.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import Annotation, CellClass, CellImage, LabelEvent, LabelStatus, Lease, Skip


class LabelingError(Exception):
    """A request the queue refuses; `code` maps to the HTTP status the API answers with."""

    status_code = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoLongerNeeded(LabelingError):
    pass


class AlreadyLabeled(LabelingError):
    pass


class NothingToUndo(LabelingError):
    status_code = 404


def labels_per_image() -> int:
    return getattr(settings, "HEMALOOP_LABELS_PER_IMAGE", 2)


def lease_duration() -> timedelta:
    return timedelta(seconds=getattr(settings, "HEMALOOP_LEASE_SECONDS", 600))


def skip_cooldown() -> timedelta:
    return timedelta(hours=getattr(settings, "HEMALOOP_SKIP_COOLDOWN_HOURS", 24))


@dataclass(frozen=True)
class QueueItem:
    image: CellImage
    lease_expires_at: datetime


def _lease_take(*, image: CellImage, annotator, now: datetime) -> QueueItem:
    expires = now + lease_duration()
    # One INSERT ... ON CONFLICT DO UPDATE: take or renew the hold in a single round trip.
    Lease.objects.bulk_create(
        [Lease(image=image, annotator=annotator, created_at=now, expires_at=expires)],
        update_conflicts=True, unique_fields=["image", "annotator"], update_fields=["expires_at"],
    )
    return QueueItem(image=image, lease_expires_at=expires)


def queue_next(*, annotator) -> QueueItem | None:
    """The next cell for this annotator, held under a lease; None when nothing is left for them.

    An image this annotator already holds comes back first (a reloaded page resumes). Otherwise:
    highest priority, then images that already have one label (disagreements surface sooner),
    then oldest. Rows other annotators are taking right now are skipped, never waited for.
    """
    now = timezone.now()
    with transaction.atomic():
        held = (
            Lease.objects.filter(annotator=annotator, expires_at__gt=now, image__label_status=LabelStatus.NEEDS_LABELS)
            .select_related("image")
            .order_by("created_at")
            .first()
        )
        if held is not None:
            return _lease_take(image=held.image, annotator=annotator, now=now)

        held_by_others = Subquery(
            Lease.objects.filter(image=OuterRef("pk"), expires_at__gt=now)
            .exclude(annotator=annotator)
            .order_by()
            .values("image")
            .annotate(n=Count("pk"))
            .values("n"),
            output_field=IntegerField(),
        )
        labeled_by_me = Annotation.objects.filter(image=OuterRef("pk"), annotator=annotator, undone_at__isnull=True)
        skipped_by_me = Skip.objects.filter(
            image=OuterRef("pk"), annotator=annotator, created_at__gt=now - skip_cooldown()
        )
        image = (
            CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS)
            .exclude(Exists(labeled_by_me))
            .exclude(Exists(skipped_by_me))
            .alias(holders=Coalesce(held_by_others, Value(0)))
            .filter(label_count__lt=labels_per_image() - F("holders"))
            .order_by("-priority", "-label_count", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if image is None:
            return None
        return _lease_take(image=image, annotator=annotator, now=now)


def _live_labels(image: CellImage) -> list[Annotation]:
    return list(image.annotations.filter(undone_at__isnull=True).order_by("created_at", "id"))


@transaction.atomic
def annotation_submit(
    *, image_id: int, annotator, cell_class: CellClass | None, duration_ms: int | None = None
) -> Annotation:
    """Record a blind label (cell_class None = unclassifiable). The last needed label decides:
    equal labels become final (agreement), different ones go to the consensus queue."""
    image = CellImage.objects.select_for_update().get(pk=image_id)
    now = timezone.now()
    if Annotation.objects.filter(image=image, annotator=annotator, undone_at__isnull=True).exists():
        raise AlreadyLabeled("You have already labeled this cell.")
    required = labels_per_image()
    if image.label_status != LabelStatus.NEEDS_LABELS or image.label_count >= required:
        raise NoLongerNeeded("This cell no longer needs a label; here is the next one.")
    holders = list(Lease.objects.filter(image=image, expires_at__gt=now).values_list("annotator_id", flat=True))
    others = sum(holder != annotator.pk for holder in holders)
    if annotator.pk not in holders and image.label_count + others >= required:
        # The free slots are held by colleagues who are looking at this cell right now.
        raise NoLongerNeeded("Your hold on this cell expired and colleagues are labeling it; here is the next one.")
    try:
        with transaction.atomic():
            annotation = Annotation.objects.create(
                image=image, annotator=annotator, cell_class=cell_class, duration_ms=duration_ms
            )
    except IntegrityError as exc:  # the unique constraint, should the check above ever be bypassed
        raise AlreadyLabeled("You have already labeled this cell.") from exc
    Lease.objects.filter(image=image, annotator=annotator).delete()
    LabelEvent.objects.create(image=image, actor=annotator, kind=LabelEvent.Kind.LABEL, cell_class=cell_class)
    image.label_count += 1
    if image.label_count >= required:
        _decide(image=image, labels=_live_labels(image), now=now)
    image.save(update_fields=["label_count", "label_status", "final_label", "final_method", "finalized_at"])
    return annotation


def _decide(*, image: CellImage, labels: list[Annotation], now: datetime) -> None:
    classes = {label.cell_class_id for label in labels}
    if len(classes) == 1:
        image.label_status = LabelStatus.FINAL
        image.final_label = labels[0].cell_class
        image.final_method = "agreement"
        image.finalized_at = now
        LabelEvent.objects.create(image=image, kind=LabelEvent.Kind.AGREEMENT, cell_class=labels[0].cell_class)
    else:
        image.label_status = LabelStatus.CONSENSUS
        LabelEvent.objects.create(image=image, kind=LabelEvent.Kind.DISAGREEMENT)


@transaction.atomic
def queue_skip(*, image_id: int, annotator) -> None:
    """Pass on a cell: it goes back to the queue for others and is not offered to this annotator again soon."""
    image = CellImage.objects.get(pk=image_id)
    Lease.objects.filter(image=image, annotator=annotator).delete()
    Skip.objects.create(image=image, annotator=annotator)


@transaction.atomic
def annotation_undo(*, annotator) -> QueueItem:
    """Take back this annotator's most recent live label while its image has no final label.

    The label is kept, marked undone (history is append-only); the cell is held for the
    annotator again so they can label it anew.
    """
    last = (
        Annotation.objects.filter(annotator=annotator, undone_at__isnull=True)
        .order_by("-created_at", "-id")
        .first()
    )
    if last is None:
        raise NothingToUndo("You have no label to undo.")
    image = CellImage.objects.select_for_update().get(pk=last.image_id)
    if image.label_status == LabelStatus.FINAL:
        raise NoLongerNeeded("This cell already has a final label; ask an adjudicator to re-open it.")
    now = timezone.now()
    last.undone_at = now
    last.save(update_fields=["undone_at"])
    image.label_count -= 1
    image.label_status = LabelStatus.NEEDS_LABELS
    image.save(update_fields=["label_count", "label_status"])
    LabelEvent.objects.create(image=image, actor=annotator, kind=LabelEvent.Kind.UNDO, cell_class=last.cell_class)
    return _lease_take(image=image, annotator=annotator, now=now)


def lease_release_expired(*, now: datetime | None = None) -> int:
    """Delete expired leases (housekeeping: expired ones are already ignored by the queue)."""
    deleted, _ = Lease.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


__all__ = [
    "AlreadyLabeled", "LabelingError", "NoLongerNeeded", "NothingToUndo", "QueueItem",
    "annotation_submit", "annotation_undo", "lease_release_expired", "queue_next", "queue_skip",
]

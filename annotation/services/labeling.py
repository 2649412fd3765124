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
from django.utils import timezone

from annotation.models import Annotation, CellClass, CellImage, FinalMethod, LabelEvent, LabelStatus, Lease, Skip
from core.errors import Conflict
from core.roles import Role, role_require


class LabelingError(Conflict):
    """A request the queue refuses (409 unless a subclass says otherwise); pages show the message."""


class NoLongerNeeded(LabelingError):
    code = "no_longer_needed"


class AlreadyLabeled(LabelingError):
    code = "already_labeled"


class NothingToUndo(LabelingError):
    status = 404
    code = "nothing_to_undo"


def labels_per_image() -> int:
    return settings.HEMALOOP_LABELS_PER_IMAGE


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.HEMALOOP_LEASE_SECONDS)


def skip_cooldown() -> timedelta:
    return timedelta(hours=settings.HEMALOOP_SKIP_COOLDOWN_HOURS)


@dataclass(frozen=True)
class QueueItem:
    image: CellImage
    lease_expires_at: datetime


def _lease_take(*, image: CellImage, annotator, now: datetime) -> QueueItem:
    expires = now + lease_duration()
    # One INSERT ... ON CONFLICT DO UPDATE: take or renew the hold in a single round trip.
    Lease.objects.bulk_create(
        [Lease(image=image, annotator=annotator, created_at=now, expires_at=expires)],
        update_conflicts=True,
        unique_fields=["image", "annotator"],
        update_fields=["expires_at"],
    )
    return QueueItem(image=image, lease_expires_at=expires)


# One statement, one round trip: resume this annotator's live hold if there is one, else take the first
# eligible cell in queue order (an index scan on `labeling_queue_order` that skips rows other annotators
# are taking right now), and write the lease. Raw SQL because this is the hottest path of the product:
# the equivalent ORM code spent ~7 ms per call in Python building three querysets, and under 50
# concurrent annotators on a small machine that CPU time became the latency tail (bench/README.md).
_QUEUE_NEXT_SQL = f"""
WITH held AS (
    SELECT lease.image_id AS id
    FROM {Lease._meta.db_table} lease
    JOIN {CellImage._meta.db_table} image ON image.id = lease.image_id
    WHERE lease.annotator_id = %(me)s AND lease.expires_at > %(now)s AND image.label_status = %(needs)s
    ORDER BY lease.created_at
    LIMIT 1
), pick AS (
    SELECT image.id
    FROM {CellImage._meta.db_table} image
    WHERE NOT EXISTS (SELECT 1 FROM held)
      AND image.label_status = %(needs)s
      AND NOT EXISTS (
          SELECT 1 FROM {Annotation._meta.db_table} label
          WHERE label.image_id = image.id AND label.annotator_id = %(me)s AND label.undone_at IS NULL)
      AND NOT EXISTS (
          SELECT 1 FROM {Skip._meta.db_table} skip
          WHERE skip.image_id = image.id AND skip.annotator_id = %(me)s AND skip.created_at > %(skip_since)s)
      AND image.label_count < %(required)s - (
          SELECT count(*) FROM {Lease._meta.db_table} other
          WHERE other.image_id = image.id AND other.expires_at > %(now)s AND other.annotator_id <> %(me)s)
    ORDER BY image.label_status, image.priority DESC, image.label_count DESC, image.id
    LIMIT 1
    FOR UPDATE OF image SKIP LOCKED
), chosen AS (
    SELECT id FROM held UNION ALL SELECT id FROM pick
), taken AS (
    INSERT INTO {Lease._meta.db_table} (image_id, annotator_id, created_at, expires_at)
    SELECT id, %(me)s, %(now)s, %(expires)s FROM chosen
    ON CONFLICT (image_id, annotator_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
    RETURNING image_id
)
SELECT image.* FROM {CellImage._meta.db_table} image JOIN taken ON taken.image_id = image.id
"""  # noqa: S608 (only table names from model metadata are formatted in; every value is a parameter)


def queue_next(*, annotator) -> QueueItem | None:
    """The next cell for this annotator, held under a lease; None when nothing is left for them.

    An image this annotator already holds comes back first (a reloaded page resumes). Otherwise:
    highest priority, then images that already have one label (disagreements surface sooner),
    then oldest. Rows other annotators are taking right now are skipped, never waited for.
    An image is offered only while its live labels plus other annotators' live holds leave a slot.
    """
    role_require(annotator, Role.ANNOTATOR, action="label cells")
    now = timezone.now()
    expires = now + lease_duration()
    params = {
        "me": annotator.pk,
        "now": now,
        "expires": expires,
        "needs": LabelStatus.NEEDS_LABELS,
        "skip_since": now - skip_cooldown(),
        "required": labels_per_image(),
    }
    images = list(CellImage.objects.raw(_QUEUE_NEXT_SQL, params))
    if not images:
        return None
    return QueueItem(image=images[0], lease_expires_at=expires)


def _live_labels(image: CellImage) -> list[Annotation]:
    return list(image.annotations.filter(undone_at__isnull=True).order_by("created_at", "id"))


@transaction.atomic
def annotation_submit(
    *, image_id: int, annotator, cell_class: CellClass | None, duration_ms: int | None = None
) -> Annotation:
    """Record a blind label (cell_class None = unclassifiable). The last needed label decides:
    equal labels become final (agreement), different ones go to the consensus queue."""
    role_require(annotator, Role.ANNOTATOR, action="label cells")
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
        # No savepoint of its own: on a violation the whole submit is rolled back anyway.
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
        image.final_method = FinalMethod.AGREEMENT
        image.finalized_at = now
        LabelEvent.objects.create(image=image, kind=LabelEvent.Kind.AGREEMENT, cell_class=labels[0].cell_class)
    else:
        image.label_status = LabelStatus.CONSENSUS
        LabelEvent.objects.create(image=image, kind=LabelEvent.Kind.DISAGREEMENT)


@transaction.atomic
def queue_skip(*, image_id: int, annotator) -> None:
    """Pass on a cell: it goes back to the queue for others and is not offered to this annotator again soon."""
    role_require(annotator, Role.ANNOTATOR, action="label cells")
    image = CellImage.objects.get(pk=image_id)
    Lease.objects.filter(image=image, annotator=annotator).delete()
    Skip.objects.create(image=image, annotator=annotator)


@transaction.atomic
def annotation_undo(*, annotator) -> QueueItem:
    """Take back this annotator's most recent live label while its image has no final label.

    The label is kept, marked undone (history is append-only); the cell is held for the
    annotator again so they can label it anew.
    """
    role_require(annotator, Role.ANNOTATOR, action="label cells")
    last = Annotation.objects.filter(annotator=annotator, undone_at__isnull=True).order_by("-created_at", "-id").first()
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


__all__ = [
    "AlreadyLabeled",
    "LabelingError",
    "NoLongerNeeded",
    "NothingToUndo",
    "QueueItem",
    "annotation_submit",
    "annotation_undo",
    "queue_next",
    "queue_skip",
]

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
from django.db.models import Subquery
from django.utils import timezone

from annotation.models import (
    Annotation,
    CellClass,
    CellImage,
    FinalMethod,
    ImageFileProblem,
    LabelEvent,
    LabelStatus,
    Lease,
    Skip,
)
from annotation.signals import labels_finalized
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


class NotHeld(LabelingError):
    code = "not_held"


class UndoExpired(LabelingError):
    code = "undo_expired"


class NothingToFlag(LabelingError):
    status = 404
    code = "nothing_to_flag"


UNDO_EXPIRED_MESSAGE = (
    "Too late to undo: undo works only shortly after a label, before you move on. "
    "Flag your label instead, and an adjudicator will look at the cell again."
)


def labels_per_image() -> int:
    return settings.HEMALOOP_LABELS_PER_IMAGE


def undo_grace() -> timedelta:
    return timedelta(seconds=settings.HEMALOOP_UNDO_GRACE_SECONDS)


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
      AND NOT EXISTS (SELECT 1 FROM {ImageFileProblem._meta.db_table} problem WHERE problem.image_id = image.id)
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
      AND NOT EXISTS (SELECT 1 FROM {ImageFileProblem._meta.db_table} problem WHERE problem.image_id = image.id)
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
    An image is offered only while its live labels plus other annotators' live holds leave a slot, and never
    while its file is known to be missing or unreadable (an ImageFileProblem: listed for admins, back in the
    queue once they restore the file and check again), not even to the annotator who holds it.
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
    *, image_id: int | None, annotator, cell_class: CellClass | None, duration_ms: int | None = None
) -> Annotation:
    """Record a blind label (cell_class None = unclassifiable) for a cell this annotator holds. The last
    needed label decides: equal labels become final (agreement), different ones go to the consensus queue.
    image_id None (the annotator named no cell that exists) is refused like any cell they do not hold.

    Any cell the annotator does not hold is refused with one answer, whatever the cell's state (labeled,
    final, in consensus, held by colleagues, missing): the refusal itself must not tell them anything.
    """
    role_require(annotator, Role.ANNOTATOR, action="label cells")
    image = CellImage.objects.select_for_update().filter(pk=image_id).first()
    now = timezone.now()
    if image is None or not Lease.objects.filter(image=image, annotator=annotator, expires_at__gt=now).exists():
        raise NotHeld("You can label only the cell the queue handed you, while you hold it; here is the next one.")
    required = labels_per_image()
    # A live hold reserves a slot (the queue and undo see to it), so these are the last line of defence.
    if image.label_status != LabelStatus.NEEDS_LABELS or image.label_count >= required:
        raise NoLongerNeeded("This cell no longer needs a label; here is the next one.")
    try:
        # No savepoint of its own: on a violation the whole submit is rolled back anyway.
        annotation = Annotation.objects.create(
            image=image, annotator=annotator, cell_class=cell_class, duration_ms=duration_ms
        )
    except IntegrityError as exc:  # the unique constraint, should the checks above ever be bypassed
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
    # A flagged label asked for an adjudicator: agreement alone does not settle the cell then.
    if len(classes) == 1 and not any(label.flagged_at for label in labels):
        image.label_status = LabelStatus.FINAL
        image.final_label = labels[0].cell_class
        image.final_method = FinalMethod.AGREEMENT
        image.finalized_at = now
        LabelEvent.objects.create(image=image, kind=LabelEvent.Kind.AGREEMENT, cell_class=labels[0].cell_class)
        transaction.on_commit(lambda: labels_finalized.send(sender=CellImage), robust=True)
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


def _latest_label(annotator) -> Annotation | None:
    """The annotator's most recent label, undone or not: only that one can ever be undone."""
    return Annotation.objects.filter(annotator=annotator).order_by("-created_at", "-id").first()


def _moved_on(*, label: Annotation, annotator) -> bool:
    """Whether the annotator went past the cell shown right after this label: skipped it, or was handed yet
    another cell. (The page asks for the next cell at once, so that first one does not count.)"""
    if Skip.objects.filter(annotator=annotator, created_at__gt=label.created_at).exists():
        return True
    handed = Lease.objects.filter(annotator=annotator, created_at__gt=label.created_at).exclude(image=label.image_id)
    return handed.count() > 1


def undo_deadline(*, annotator) -> datetime | None:
    """Until when this annotator may undo their last label; None when there is nothing they may undo."""
    last = _latest_label(annotator)
    if last is None or last.undone_at is not None or _moved_on(label=last, annotator=annotator):
        return None
    deadline = last.created_at + undo_grace()
    return deadline if timezone.now() <= deadline else None


@transaction.atomic
def annotation_undo(*, annotator) -> QueueItem:
    """Take back this annotator's last label within the grace period, whatever its cell became.

    The automatic decision the label caused (final by agreement, or a consensus item) is withdrawn with it,
    and the answer is the same in every case: the cell, held for the annotator again. After the grace period,
    or once they moved on, every undo is refused the same way; a correction is then a flag for an adjudicator.
    """
    role_require(annotator, Role.ANNOTATOR, action="label cells")
    # Lock the image first, in one statement, and read the label only under the lock: two undos at once
    # must not both take a label back (each would decrement label_count).
    latest_image = Annotation.objects.filter(annotator=annotator).order_by("-created_at", "-id").values("image_id")[:1]
    image = CellImage.objects.select_for_update().filter(pk=Subquery(latest_image)).first()
    last = _latest_label(annotator)
    if last is None or last.undone_at is not None:
        raise NothingToUndo("You have no label to undo.")
    now = timezone.now()
    if (
        image is None
        or last.image_id != image.pk  # a label of the same annotator came in between
        or now > last.created_at + undo_grace()
        or _moved_on(label=last, annotator=annotator)
    ):
        raise UndoExpired(UNDO_EXPIRED_MESSAGE)
    last.undone_at = now
    last.save(update_fields=["undone_at"])
    LabelEvent.objects.create(image=image, actor=annotator, kind=LabelEvent.Kind.UNDO, cell_class=last.cell_class)
    if image.label_status != LabelStatus.NEEDS_LABELS:
        # Nothing is deleted: the history keeps the decision and says why it no longer holds.
        LabelEvent.objects.create(
            image=image,
            kind=LabelEvent.Kind.WITHDRAWN,
            cell_class=image.final_label,
            note=f"Was: {image.get_label_status_display()}"
            + (f" ({image.get_final_method_display()})" if image.final_method else ""),
        )
    image.label_count -= 1
    image.label_status = LabelStatus.NEEDS_LABELS
    image.final_label = None
    image.final_method = ""
    image.finalized_at = None
    image.save(update_fields=["label_count", "label_status", "final_label", "final_method", "finalized_at"])
    return _lease_take(image=image, annotator=annotator, now=now)


@transaction.atomic
def annotation_flag(*, annotator, public_id: str | None = None, note: str = "") -> None:
    """Ask an adjudicator to look at one of my live labels again: the one on the cell with this public id (default:
    my last one).

    The cell's decision goes to the consensus queue: at once when it already has one, or when its last label
    comes in. The answer is the same whatever the cell became; flagging twice changes nothing.
    """
    role_require(annotator, Role.ANNOTATOR, action="label cells")
    mine = Annotation.objects.filter(annotator=annotator, undone_at__isnull=True)
    if public_id is not None:
        mine = mine.filter(image__public_id=public_id)
    wanted = mine.order_by("-created_at", "-id").values("image_id")[:1]
    image = CellImage.objects.select_for_update().filter(pk=Subquery(wanted)).first()
    label = mine.filter(image=image).first() if image is not None else None
    if label is None:
        raise NothingToFlag("You have no such label to flag.")
    if label.flagged_at is not None:
        return
    label.flagged_at = timezone.now()
    label.save(update_fields=["flagged_at"])
    LabelEvent.objects.create(
        image=image, actor=annotator, kind=LabelEvent.Kind.FLAGGED, cell_class=label.cell_class, note=note.strip()
    )
    if image.label_status == LabelStatus.FINAL:
        image.label_status = LabelStatus.CONSENSUS
        image.final_label = None
        image.final_method = ""
        image.finalized_at = None
        image.save(update_fields=["label_status", "final_label", "final_method", "finalized_at"])


__all__ = [
    "AlreadyLabeled",
    "LabelingError",
    "NoLongerNeeded",
    "NotHeld",
    "NothingToFlag",
    "NothingToUndo",
    "QueueItem",
    "UndoExpired",
    "annotation_flag",
    "annotation_submit",
    "annotation_undo",
    "queue_next",
    "queue_skip",
    "undo_deadline",
]

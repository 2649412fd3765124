"""The one blinding rule for people who hold two roles: a cell is hidden from a user who may still label it, whose
own live label on it is still open, or who may still undo their label on it. Every route that shows more than a
cell's pixels (the image page, the history, consensus, case summaries, the review list, the model's opinion, the
predict API) asks this module.

"Hidden" means nothing but the image: no reference label, analyzer class, colleague's label, history, final label
or model output, and the same answer whatever those are.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from annotation.models import Annotation, CellImage, LabelStatus
from core.errors import PermissionRefused
from core.roles import Role, user_has_role


class CellHidden(PermissionRefused):
    """One refusal, word for word, for every hidden cell: its text must not depend on the cell's state."""

    code = "cell_hidden"

    def __init__(self) -> None:
        super().__init__("This cell is hidden from you while you may still label it or your label on it is open.")


def self_adjudication_allowed() -> bool:
    return settings.HEMALOOP_ALLOW_SELF_ADJUDICATION


def _open_statuses() -> list[str]:
    # A cell in consensus stays hidden from its annotators (they could undo after seeing the colleague's label),
    # unless the lab lets people resolve their own disagreements: then they have to see both labels.
    if self_adjudication_allowed():
        return [LabelStatus.NEEDS_LABELS]
    return [LabelStatus.NEEDS_LABELS, LabelStatus.CONSENSUS]


def _has_live_label(user) -> Exists:
    return Exists(Annotation.objects.filter(image=OuterRef("pk"), annotator_id=user.pk, undone_at__isnull=True))


def _undoable_label(user) -> Exists:
    # A label its annotator may still undo: seeing that its cell became final would tell them they agreed with the
    # colleague, and undo would let them act on it. (Hidden for the whole grace period even if they moved on.)
    since = timezone.now() - timedelta(seconds=settings.HEMALOOP_UNDO_GRACE_SECONDS)
    return Exists(
        Annotation.objects.filter(
            image=OuterRef("pk"), annotator_id=user.pk, undone_at__isnull=True, created_at__gte=since
        )
    )


def images_hidden_from(*, user) -> QuerySet[CellImage]:
    """Every cell `user` may still label or holds an open live label on; use as `.exclude(image__in=...)`."""
    if not user.is_authenticated:
        return CellImage.objects.all()
    hidden = Q(_has_live_label(user), label_status__in=_open_statuses())
    if not self_adjudication_allowed():  # a lab that lets people resolve their own disagreements shows them anyway
        hidden |= Q(_undoable_label(user))
    if user_has_role(user, Role.ANNOTATOR):
        # The queue's eligibility, minus what changes by the hour: a skip cools down and a colleague's lease
        # expires, so neither makes a cell safe to look at.
        hidden |= Q(label_status=LabelStatus.NEEDS_LABELS)
    return CellImage.objects.filter(hidden)


def may_still_label(*, user, image: CellImage) -> bool:
    """The queue could still hand `image` to `user`: an annotator, the cell needs labels, none of them is theirs."""
    return (
        user_has_role(user, Role.ANNOTATOR)
        and image.label_status == LabelStatus.NEEDS_LABELS
        and not Annotation.objects.filter(image=image, annotator_id=user.pk, undone_at__isnull=True).exists()
    )


def image_hidden_from(*, user, image: CellImage) -> bool:
    """Whether `user` may see anything about `image` beyond its pixels (False) or not (True)."""
    if not user.is_authenticated:
        return True
    if not self_adjudication_allowed() and CellImage.objects.filter(pk=image.pk).filter(_undoable_label(user)).exists():
        return True
    if image.label_status not in _open_statuses():
        return False
    if image.label_status == LabelStatus.NEEDS_LABELS and user_has_role(user, Role.ANNOTATOR):
        return True  # may still label it, or labeled it and the cell is still open
    return Annotation.objects.filter(image=image, annotator_id=user.pk, undone_at__isnull=True).exists()


def image_require_visible(*, user, image: CellImage) -> None:
    """CellHidden (403, one text for every hidden cell) unless `user` may see more than `image`'s pixels."""
    if image_hidden_from(user=user, image=image):
        raise CellHidden()

"""Consensus: adjudicators (and admins) resolve disagreements and re-open final labels.

Nothing is overwritten: the image's current final label changes, and a LabelEvent records who
decided what, when and why.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from annotation.models import Annotation, CellClass, CellImage, FinalMethod, LabelEvent, LabelStatus
from annotation.selectors.blinding import image_require_visible, self_adjudication_allowed
from annotation.services.labeling import LabelingError
from annotation.signals import labels_finalized
from core.errors import AppError, PermissionRefused
from core.roles import Role, role_require

# Who may decide a final label: the same roles the consensus page and API admit.
DECIDERS = (Role.ADJUDICATOR, Role.ADMIN)


class AlreadyResolved(LabelingError):
    code = "already_resolved"


class NotFinal(LabelingError):
    code = "not_final"


class ReasonRequired(AppError):
    code = "reason_required"


class OwnLabel(PermissionRefused):
    code = "own_label"


def _why_not_in_consensus(image: CellImage) -> str:
    if image.label_status == LabelStatus.NEEDS_LABELS:
        return "an annotator took back a label"
    if image.final_method == FinalMethod.ADJUDICATED:
        last = image.events.filter(kind=LabelEvent.Kind.ADJUDICATED).select_related("actor").last()
        return f"it was resolved by {last.actor.username} at {timezone.localtime(last.created_at):%H:%M:%S}"
    return "it already has a final label"


@transaction.atomic
def consensus_resolve(*, image_id: int, adjudicator, cell_class: CellClass | None, note: str = "") -> CellImage:
    """Record the final class (any class, or None for unclassifiable). The first of two racing
    adjudicators wins; the second gets AlreadyResolved naming who resolved it."""
    role_require(adjudicator, *DECIDERS, action="resolve disagreements")
    image = CellImage.objects.select_for_update().get(pk=image_id)
    # Checked before the cell's state, and whatever it is, so the refusal says nothing about the colleague's label.
    labeled = Annotation.objects.filter(image=image, annotator_id=adjudicator.pk, undone_at__isnull=True).exists()
    if labeled and not self_adjudication_allowed():
        raise OwnLabel("You labeled this cell: another adjudicator resolves it.")
    image_require_visible(user=adjudicator, image=image)
    if image.label_status != LabelStatus.CONSENSUS:
        raise AlreadyResolved(f"This cell is no longer in the consensus queue: {_why_not_in_consensus(image)}.")
    image.label_status = LabelStatus.FINAL
    image.final_label = cell_class
    image.final_method = FinalMethod.ADJUDICATED
    image.finalized_at = timezone.now()
    image.save(update_fields=["label_status", "final_label", "final_method", "finalized_at"])
    LabelEvent.objects.create(
        image=image, actor=adjudicator, kind=LabelEvent.Kind.ADJUDICATED, cell_class=cell_class, note=note
    )
    transaction.on_commit(lambda: labels_finalized.send(sender=CellImage), robust=True)
    return image


@transaction.atomic
def label_reopen(*, image_id: int, actor, reason: str) -> CellImage:
    """Send a final label back to the consensus queue, with a reason kept in the history."""
    role_require(actor, *DECIDERS, action="re-open final labels")
    if not reason.strip():
        raise ReasonRequired("A reason is required to re-open a final label.")
    image = CellImage.objects.select_for_update().get(pk=image_id)
    image_require_visible(user=actor, image=image)
    if image.label_status != LabelStatus.FINAL:
        raise NotFinal("Only a cell with a final label can be re-opened.")
    LabelEvent.objects.create(
        image=image, actor=actor, kind=LabelEvent.Kind.REOPENED, cell_class=image.final_label, note=reason.strip()
    )
    image.label_status = LabelStatus.CONSENSUS
    image.final_label = None
    image.final_method = ""
    image.finalized_at = None
    image.save(update_fields=["label_status", "final_label", "final_method", "finalized_at"])
    return image

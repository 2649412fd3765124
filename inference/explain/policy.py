"""Who may see the model's opinion: adjudicators, researchers and admins, never an annotator who may still label."""

from __future__ import annotations

from annotation.models import Annotation, CellImage, LabelStatus
from core.roles import Role, user_has_role

EXPLAIN_ROLES = (Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN)


def opinion_visible_to(*, user, image: CellImage) -> bool:
    """Whether `user` may see the model's opinion on `image`.

    Adjudicators, researchers and admins may; annotators never. A user who holds a second role besides
    annotator still may not while the image waits for labels they have not given: the queue could hand it to
    them, and their label must stay blind to the model.
    """
    if not user_has_role(user, *EXPLAIN_ROLES):
        return False
    if user_has_role(user, Role.ANNOTATOR) and image.label_status == LabelStatus.NEEDS_LABELS:
        return Annotation.objects.filter(image=image, annotator=user, undone_at__isnull=True).exists()
    return True

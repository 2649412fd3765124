"""Who may see the model's opinion: adjudicators, researchers and admins, and only on cells the blinding rule
(annotation.selectors.blinding) does not hide from them."""

from __future__ import annotations

from annotation.models import CellImage
from annotation.selectors.blinding import image_hidden_from
from core.roles import Role, user_has_role

EXPLAIN_ROLES = (Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN)


def opinion_visible_to(*, user, image: CellImage) -> bool:
    """Whether `user` may see the model's opinion on `image`: never annotators, and nobody from whom the cell is
    hidden (they may still label it, or their own label on it is open)."""
    return user_has_role(user, *EXPLAIN_ROLES) and not image_hidden_from(user=user, image=image)

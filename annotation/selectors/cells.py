"""Cells by the ids people see. Annotators know a cell only by its random public id; database ids are for staff
roles, and a cell hidden from its viewer (annotation.selectors.blinding) answers as if its database id did not exist.
"""

from __future__ import annotations

from django.http import Http404

from annotation.models import CellImage
from annotation.selectors.blinding import image_hidden_from
from annotation.selectors.images import image_list
from core.roles import Role, user_has_role

# The roles that work with database ids (pages and APIs beyond labeling); an annotator-only user has none of them.
STAFF_ROLES = (Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN)


def cell_find(*, public_id: str) -> CellImage | None:
    """The cell with this public id, or None: the one place an annotator's id is resolved. Anything else (a database
    id, a SHA-256, a typo) finds nothing, the same way."""
    return CellImage.objects.filter(public_id=str(public_id)).first()


def cell_get(*, public_id: str) -> CellImage:
    """The cell with this public id; Http404 (404 on pages and in the API) when there is none."""
    cell = cell_find(public_id=public_id)
    if cell is None:
        raise Http404("No such cell.")
    return cell


def image_get_for_staff(*, user, image_id: int) -> CellImage:
    """The image with this database id for a staff role; Http404, exactly as for an id that does not exist, for a
    user with no staff role and for a cell hidden from the user (its pixels would tie the database id, and with it
    the import report's file name, to the cell the queue hands them)."""
    if not user_has_role(user, *STAFF_ROLES):
        raise Http404("No such image.")
    image = image_list().filter(pk=image_id).first()
    if image is None or image_hidden_from(user=user, image=image):
        raise Http404("No such image.")
    return image

"""The one application error type and the one role check."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from rest_framework.exceptions import NotFound

from core.errors import AppError, Conflict, PermissionRefused, api_exception_handler
from core.roles import Role, role_require


def test_app_error_becomes_json_with_its_status_and_code():
    response = api_exception_handler(Conflict("This cell already has a final label."), {})
    assert response.status_code == 409
    assert response.data == {"detail": "This cell already has a final label.", "code": "conflict"}


def test_app_error_status_and_code_can_be_set_per_raise():
    response = api_exception_handler(AppError("Too many files.", status=413, code="too_many_files"), {})
    assert (response.status_code, response.data["code"]) == (413, "too_many_files")


def test_drf_errors_still_go_through_drf():
    response = api_exception_handler(NotFound("No such cell."), {})
    assert response.status_code == 404
    assert response.data == {"detail": "No such cell."}


def test_role_require_refuses_with_a_permission_error_naming_the_roles():
    with pytest.raises(PermissionRefused, match="Only researchers and admins may cut dataset versions.") as caught:
        role_require(AnonymousUser(), Role.RESEARCHER, Role.ADMIN, action="cut dataset versions")
    assert isinstance(caught.value, PermissionDenied)  # page views answer 403 without catching it


def test_role_require_admits_a_holder_of_any_role(researcher):
    role_require(researcher, Role.RESEARCHER, Role.ADMIN, action="read statistics")


def test_role_require_refuses_another_role(annotator):
    with pytest.raises(PermissionRefused, match="Only admins may import images."):
        role_require(annotator, Role.ADMIN, action="import images")

"""Role checks for DRF views and page views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from core.roles import Role, user_has_role


def roles_permission(*roles: Role) -> type[BasePermission]:
    """A DRF permission class that admits authenticated users holding any of `roles`."""

    class HasRole(BasePermission):
        message = f"This needs one of the roles: {', '.join(r.value for r in roles)}."

        def has_permission(self, request, view) -> bool:
            return user_has_role(request.user, *roles)

    HasRole.__name__ = "HasRole_" + "_".join(r.value for r in roles)
    return HasRole


def role_required(*roles: Role) -> Callable:
    """Page-view decorator: 403 for a logged-in user without any of `roles` (login is global)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not user_has_role(request.user, *roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapped.required_roles = roles
        return wrapped

    return decorator

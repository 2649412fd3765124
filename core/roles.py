"""The four roles of DESIGN.md, stored as Django groups. A superuser counts as admin."""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from core.errors import PermissionRefused


class Role(StrEnum):
    ANNOTATOR = "annotator"
    ADJUDICATOR = "adjudicator"
    RESEARCHER = "researcher"
    ADMIN = "admin"


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[Role]:
    if not user.is_authenticated or not user.is_active:
        return set()
    cached = getattr(user, "_hemaloop_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = {role for role in Role if role.value in names}
        if user.is_superuser:
            cached.add(Role.ADMIN)
        user._hemaloop_roles = cached
    return cached


def user_has_role(user: AbstractBaseUser | AnonymousUser, *roles: Role) -> bool:
    return bool(user_roles(user) & set(roles))


def role_require(user: AbstractBaseUser | AnonymousUser, *roles: Role, action: str = "do this") -> None:
    """Raise PermissionRefused unless `user` holds one of `roles`: every service acting for a user calls this."""
    if not user_has_role(user, *roles):
        names = " and ".join(f"{role.value}s" for role in roles)
        raise PermissionRefused(f"Only {names} may {action}.")

"""Writes for accounts: users with a role, and the role groups with their model permissions.

Login throttling and API tokens have their own modules (login_throttle, tokens)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group, Permission
from django.db import transaction

from core.roles import Role

PROJECT_APPS = ("accounts", "annotation", "training", "inference", "releases", "labscreen")
# Django model permissions per role, for the Django admin and for anyone inspecting groups;
# the pages and API check roles directly (core.permissions).
ROLE_PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.ANNOTATOR: (),
    Role.ADJUDICATOR: ("annotation.view_cellimage",),
    Role.RESEARCHER: ("annotation.view_cellimage", "annotation.view_case", "annotation.view_importbatch"),
    Role.ADMIN: (),  # all permissions of the project's apps and of auth users, see below
}


def roles_sync_groups() -> None:
    """Create the four role groups and (re)assign their permissions. Idempotent."""
    for role in Role:
        group, _ = Group.objects.get_or_create(name=role.value)
        if role is Role.ADMIN:
            perms = Permission.objects.filter(content_type__app_label__in=(*PROJECT_APPS, "auth", "authtoken"))
        else:
            wanted = [p.split(".", 1) for p in ROLE_PERMISSIONS[role]]
            perms = Permission.objects.none()
            for app_label, codename in wanted:
                perms = perms | Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        group.permissions.set(perms)


@transaction.atomic
def user_create(*, username: str, role: Role, password: str | None = None, email: str = "") -> tuple[AbstractUser, str]:
    """Create a user holding `role`; returns the user and the password (generated when not given)."""
    password = password or secrets.token_urlsafe(12)
    user = get_user_model().objects.create_user(username=username, email=email, password=password)
    roles_sync_groups()
    user.groups.add(Group.objects.get(name=role.value))
    if role is Role.ADMIN:
        user.is_staff = True  # the Django admin is where admins edit the taxonomy and users
        user.save(update_fields=["is_staff"])
    return user, password


UNKNOWN_PASSWORD = "(unchanged; reset with manage.py changepassword)"  # noqa: S105 - a notice, not a secret
DEMO_USERS: tuple[tuple[str, Role], ...] = (
    ("admin", Role.ADMIN),
    ("annotator1", Role.ANNOTATOR),
    ("annotator2", Role.ANNOTATOR),
    ("adjudicator", Role.ADJUDICATOR),
    ("researcher", Role.RESEARCHER),
)


def demo_users_ensure(*, credentials_file: Path) -> list[dict[str, str]]:
    """Create the demo users once, with random passwords kept in credentials_file (mode 0600).

    A second run reuses the file. A demo user missing from the database (deleted by hand) is
    recreated with a new password, and the file updated.
    """
    saved = json.loads(credentials_file.read_text()) if credentials_file.exists() else {}
    User = get_user_model()
    result = []
    for username, role in DEMO_USERS:
        password = saved.get(username)
        if not User.objects.filter(username=username).exists():
            _, password = user_create(username=username, role=role)
        elif password is None:
            # The user exists but its password is unknown here: never print a guess.
            password = UNKNOWN_PASSWORD
        saved[username] = password
        result.append({"username": username, "role": role.value, "password": password})
    credentials_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = credentials_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=2))
    tmp.chmod(0o600)
    tmp.replace(credentials_file)
    return result

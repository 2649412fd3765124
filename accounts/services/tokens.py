"""API tokens: issued for a throttled login; revoked by their owner, by an admin, or by a password change."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from accounts.services.login_throttle import login_attempt
from core.errors import AppError

_logger = logging.getLogger(__name__)


def token_obtain(*, request: HttpRequest, username: str, password: str) -> Token:
    """The user's token (created on first use) for a correct user name and password; LoginLocked while throttled."""
    user = login_attempt(request=request, username=username, password=password)
    if user is None:
        raise AppError("Unable to log in with the user name and password given.", code="invalid_login")
    token, _ = Token.objects.get_or_create(user=user)
    return token


def token_revoke(*, user: AbstractBaseUser, revoked_by: AbstractBaseUser) -> bool:
    """Delete the user's token, so requests carrying it get 401; True if there was one. A new login gets a new key."""
    deleted, _ = Token.objects.filter(user=user).delete()
    if deleted:
        _logger.info("API token of %s revoked by %s", user.get_username(), revoked_by.get_username())
    return bool(deleted)


def token_revoke_if_password_changes(sender, instance, update_fields=None, **kwargs) -> None:
    """pre_save of the user model: a changed password hash (a new password, or password login disabled, from the
    admin or `manage.py changepassword`) marks the user's token for revocation once the save succeeds. Sessions are
    already ended by Django's session hash; a token would otherwise outlive the password it was issued for."""
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = type(instance).objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._hemaloop_password_changed = stored is not None and stored != instance.password


def token_revoke_after_password_change(sender, instance, **kwargs) -> None:
    """post_save of the user model: the revocation `token_revoke_if_password_changes` asked for."""
    if getattr(instance, "_hemaloop_password_changed", False):
        instance._hemaloop_password_changed = False
        if Token.objects.filter(user=instance).delete()[0]:
            _logger.info("API token of %s revoked: the password changed", instance.get_username())

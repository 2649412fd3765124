"""API tokens: issued for a throttled login, revoked by their owner or by an admin."""

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

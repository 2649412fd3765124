"""The admin's active-learning settings (cold start, strategy, exploration, class cap, queue length, review
threshold)."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.roles import Role, role_require
from inference.models import ActiveLearningSettings
from inference.selectors import al_settings_get

_logger = logging.getLogger(__name__)

AL_SETTINGS_FIELDS = ("cold_start", "strategy", "exploration", "max_class_share", "top_n", "review_min_confidence")


def al_settings_update(*, actor: AbstractBaseUser, **values) -> ActiveLearningSettings:
    """Change the active-learning settings (any of AL_SETTINGS_FIELDS); ValidationError names a bad value."""
    role_require(actor, Role.ADMIN, action="change the active-learning settings")
    unknown = set(values) - set(AL_SETTINGS_FIELDS)
    if unknown:
        raise ValueError(f"Unknown settings: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        al_settings_get()
        row = ActiveLearningSettings.objects.select_for_update().get(pk=ActiveLearningSettings.SINGLETON_ID)
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_by = actor
        row.full_clean()
        row.save()
    _logger.info("active-learning settings changed by %s: %s", actor, values)
    return row

"""Model versions: activating one (or rolling back to an earlier one), announced with training.signals."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.roles import Role, role_require
from training.models import ModelVersion
from training.selectors import model_version_active
from training.signals import model_version_activated


def model_version_activate(*, version: ModelVersion, actor: AbstractBaseUser) -> ModelVersion:
    """Make `version` the model inference uses (a candidate, or an earlier one to roll back); the old one retires."""
    role_require(actor, Role.ADMIN, action="activate model versions")
    return _activate(version=version, actor=actor)


def model_version_activate_refreshed_head(*, version: ModelVersion) -> bool:
    """Activate a head version that a queue refresh just registered, without an admin, unless an admin pinned a
    fully trained ensemble by activating it (a head then stays a candidate on the Training page); returns whether
    it became active. The refresh re-orders the queue itself, so subscribers see activated_by None."""
    if not version.is_head:
        raise ValueError(f"model version {version.pk} is not a head")
    with transaction.atomic():
        active = model_version_active(for_update=True)
        if active is not None and not active.is_head:
            return False
        _activate(version=version, actor=None)
    return True


def _activate(*, version: ModelVersion, actor: AbstractBaseUser | None) -> ModelVersion:
    with transaction.atomic():
        current = list(ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE))
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == ModelVersion.Status.ACTIVE:
            return version
        ModelVersion.objects.filter(pk__in=[row.pk for row in current]).update(status=ModelVersion.Status.RETIRED)
        version.status = ModelVersion.Status.ACTIVE
        version.activated_at = timezone.now()
        version.activated_by = actor
        version.save(update_fields=["status", "activated_at", "activated_by"])
        # Announced after commit (inference then re-scores the pool, re-orders the labeling queue and deletes the
        # retired model's cached heatmaps), so no subscriber sees an activation that was rolled back.
        transaction.on_commit(lambda: model_version_activated.send(sender=ModelVersion, model_version=version))
    return version


def model_version_better_than_active(*, version: ModelVersion) -> bool:
    """Whether `version` beats the active one on test macro-F1 (any version beats none or one without a score)."""
    active = model_version_active()
    if version.macro_f1 is None:
        return False
    return active is None or active.macro_f1 is None or version.macro_f1 > active.macro_f1

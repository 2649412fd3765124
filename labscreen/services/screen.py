"""The lab screen: activating a study's screen model and scoring cases' newest measurement sets with it."""

from __future__ import annotations

import logging
from functools import lru_cache

import joblib
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from core.errors import AppError
from core.jobs import JobStatus
from core.roles import Role, role_require
from labscreen.models import CaseScreen, LabStudy, MeasurementSet
from labscreen.selectors import lab_screen_active, newest_sets, table_from_sets

_logger = logging.getLogger(__name__)


class ScreenRefused(AppError):
    code = "screen_refused"


@lru_cache(maxsize=4)
def _load(name: str):
    # Our own stored file, written once by the study's worker under a name of that study: cached per name.
    with default_storage.open(name, "rb") as handle:
        return joblib.load(handle)  # noqa: S301 - trusted: written by this application's own worker


def screen_model_load(*, study: LabStudy):
    name = study.files.get("model")
    if not name:
        raise ScreenRefused(f"Study {study.pk} has no screen model (no model with probabilities was run).")
    try:
        return _load(name)
    except FileNotFoundError:
        raise ScreenRefused(f"The screen model file of study {study.pk} is missing.") from None


def _score(*, study: LabStudy, sets: list[MeasurementSet]) -> int:
    if not sets:
        return 0
    model = screen_model_load(study=study)
    table = table_from_sets(sets, columns=study.results["cohort"]["columns"])
    probabilities = model.predict_proba(table.values)[:, 1]
    now = timezone.now()
    CaseScreen.objects.filter(study=study, case_id__in=[s.case_id for s in sets]).delete()
    CaseScreen.objects.bulk_create(
        CaseScreen(study=study, case_id=s.case_id, measurement_set=s, probability=float(p), scored_at=now)
        for s, p in zip(sets, probabilities, strict=True)
    )
    return len(sets)


def screen_activate(*, study: LabStudy, actor: AbstractBaseUser) -> LabStudy:
    """Make `study`'s screen model the lab screen and score every case's newest measurement set with it."""
    role_require(actor, Role.ADMIN, action="activate a lab screen")
    if study.status != JobStatus.SUCCEEDED:
        raise ScreenRefused(f"Study {study.pk} is {study.get_status_display().lower()}; only a finished study can.")
    screen_model_load(study=study)
    with transaction.atomic():
        LabStudy.objects.filter(is_screen=True).exclude(pk=study.pk).update(is_screen=False)
        LabStudy.objects.filter(pk=study.pk).update(is_screen=True, activated_at=timezone.now(), activated_by=actor)
        study.refresh_from_db()
        sets = list(newest_sets().select_related("case", "lab_import"))
        _score(study=study, sets=sets)
    return study


def screen_deactivate(*, actor: AbstractBaseUser) -> None:
    role_require(actor, Role.ADMIN, action="turn the lab screen off")
    LabStudy.objects.filter(is_screen=True).update(is_screen=False)


def screen_score_sets(*, set_ids: list[int]) -> int:
    """Score newly imported sets with the active screen (nothing to do without one)."""
    study = lab_screen_active()
    if study is None:
        return 0
    sets = list(MeasurementSet.objects.filter(pk__in=set_ids).select_related("case", "lab_import"))
    try:
        return _score(study=study, sets=sets)
    except ScreenRefused:
        _logger.warning("lab screen %s cannot score: its model is missing", study.pk)
        return 0

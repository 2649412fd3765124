"""Lab-screen studies as researchers and admins start and cancel them; the worker side is labscreen.services.execute."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.errors import AppError
from core.jobs import JobStatus, job_send_on_commit
from core.roles import Role, role_require, user_has_role
from labscreen import tasks
from labscreen.ml.config import StudyConfig
from labscreen.models import LabStudy
from labscreen.selectors import cohort_counts

_logger = logging.getLogger(__name__)


class LabStudyRefused(AppError):
    code = "lab_study_refused"


def lab_study_start(*, requested_by: AbstractBaseUser, title: str = "", **settings_: object) -> LabStudy:
    """Queue a study on the newest measurement set of every case with an outcome."""
    role_require(requested_by, Role.RESEARCHER, Role.ADMIN, action="start lab-screen studies")
    values = {"top_k": settings.HEMALOOP_LABSCREEN_TOP_K, **{k: v for k, v in settings_.items() if v is not None}}
    try:
        config = StudyConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise LabStudyRefused(f"Invalid study settings: {exc}") from exc
    counts = cohort_counts()
    smaller = min(counts.values())
    if smaller < config.folds:
        raise LabStudyRefused(
            f"{config.folds} stratified folds need at least {config.folds} cases of each outcome with lab data; "
            f"there are {counts['malignant']} malignant and {counts['non_malignant']} non-malignant."
        )
    with transaction.atomic():
        study = LabStudy.objects.create(title=title[:200], config=config.to_dict(), requested_by=requested_by)
        job_send_on_commit(job=study, task=tasks.lab_study_run)
    return study


def lab_study_cancel(*, study: LabStudy, actor: AbstractBaseUser) -> LabStudy:
    """Cancel a queued study at once; ask a running one to stop after its current model fit. Its requester or an
    admin may."""
    role_require(actor, Role.RESEARCHER, Role.ADMIN, action="cancel lab-screen studies")
    if study.requested_by_id != actor.pk and not user_has_role(actor, Role.ADMIN):
        raise LabStudyRefused("Only the researcher who started a study, or an admin, may cancel it.", status=403)
    if LabStudy.objects.filter(pk=study.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    ):
        study.refresh_from_db()
        return study
    if not LabStudy.objects.filter(pk=study.pk, status=JobStatus.RUNNING).update(cancel_requested=True):
        study.refresh_from_db()
        raise LabStudyRefused(f"Study {study.pk} is already {study.get_status_display().lower()}.", status=409)
    study.refresh_from_db()
    return study

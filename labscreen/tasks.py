"""Celery task of the lab screen (default queue: scikit-learn on CPUs). The logic is labscreen.services.execute;
labscreen.services.studies enqueues this task."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from labscreen.models import LabStudy
from labscreen.services.execute import lab_study_execute


@shared_task(
    name="labscreen.tasks.lab_study_run",
    acks_late=True,  # a worker that dies mid-study gets it redelivered; the claim makes that harmless
    soft_time_limit=settings.HEMALOOP_LABSCREEN_TIME_LIMIT_S,
    time_limit=settings.HEMALOOP_LABSCREEN_TIME_LIMIT_S + 120,
)
def lab_study_run(study_id: int) -> str:
    study = LabStudy.objects.filter(pk=study_id).first()
    if study is None:
        return "missing"
    return lab_study_execute(study=study).status

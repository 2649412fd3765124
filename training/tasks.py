"""Celery task for the training queue: retrain the ensemble of one run (all logic lives in training.services.execute,
which never imports this module; training.services.runs enqueues it)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from training.models import TrainingRun
from training.services.execute import training_run_execute


@shared_task(
    name="training.tasks.training_run",
    acks_late=True,  # a worker that dies mid-run gets the run redelivered; the claim makes that harmless
    soft_time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST - 300,
    time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST,
)
def training_run(run_id: int) -> str:
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        return "missing"
    return training_run_execute(run=run).status

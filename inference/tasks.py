"""Celery tasks for the inference queue: score the pool with a version (then re-order the labeling queue if it is
active), and re-order the labeling queue alone (Apply now). The services they call never import this module;
inference.services.starts and .hooks enqueue them."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from inference.services.refresh import queue_priorities_refresh as queue_priorities_refresh_service
from inference.services.scoring import pool_score as pool_score_service
from inference.services.selection import queue_priorities_update
from training.models import ModelVersion


@shared_task(
    name="inference.tasks.pool_score",
    acks_late=True,  # rescoring is an idempotent upsert, so a redelivery after a worker death is harmless
    soft_time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST - 300,
    time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST,
)
def pool_score(model_version_id: int) -> str:
    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        return "missing"
    scored = pool_score_service(model_version=version)
    version.refresh_from_db(fields=["status"])
    # A candidate is scored for its review list only; the queue follows the active model alone.
    if version.status != ModelVersion.Status.ACTIVE:
        return f"scored {scored}"
    chosen = queue_priorities_update(model_version=version)
    return f"scored {scored}, prioritised {len(chosen)}"


@shared_task(
    name="inference.tasks.queue_priorities_refresh",
    acks_late=True,  # the same settings and predictions give the same order, so a redelivery is harmless
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def queue_priorities_refresh() -> str:
    mode, chosen = queue_priorities_refresh_service()
    return f"{mode}: prioritised {len(chosen)}"

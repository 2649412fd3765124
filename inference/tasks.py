"""Celery tasks for the inference queue: run a scoring job (then re-order the labeling queue if its version is
active), re-order the labeling queue alone (Apply now), grow the embedding index, and refresh the queue's head.
inference.services.starts and .hooks enqueue them; inference.services.pipeline reaches starts as a module."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from inference.services.pipeline import embedding_job_process, head_refresh_process, head_rescore_process
from inference.services.refresh import queue_priorities_refresh as queue_priorities_refresh_service
from inference.services.scoring import scoring_job_process


@shared_task(
    name="inference.tasks.scoring_job_process",
    # Acked after the run: a copy redelivered because the worker died before claiming the job runs it; one that
    # finds the job already claimed (running, or reaped) returns at once, so no job runs twice.
    acks_late=True,
    soft_time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST - 300,
    time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST,
)
def scoring_job_process_task(job_id: int) -> str:
    return scoring_job_process(job_id=job_id)


@shared_task(
    name="inference.tasks.queue_priorities_refresh",
    acks_late=True,  # the same settings and predictions give the same order, so a redelivery is harmless
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def queue_priorities_refresh() -> str:
    mode, chosen = queue_priorities_refresh_service()
    return f"{mode}: prioritised {len(chosen)}"


@shared_task(
    name="inference.tasks.embedding_job_process",
    acks_late=True,  # as scoring: a redelivered copy finds the job claimed and returns
    soft_time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST - 300,
    time_limit=settings.CELERY_TASK_TIME_LIMIT_LONGEST,
)
def embedding_job_process_task(job_id: int) -> str:
    return embedding_job_process(job_id=job_id)


@shared_task(name="inference.tasks.head_refresh", acks_late=True, soft_time_limit=30 * 60, time_limit=31 * 60)
def head_refresh_task(job_id: int) -> str:
    return head_refresh_process(job_id=job_id)


@shared_task(name="inference.tasks.head_rescore", acks_late=True, soft_time_limit=30 * 60, time_limit=31 * 60)
def head_rescore_task(version_id: int, missing_only: bool = False) -> str:
    return head_rescore_process(version_id=version_id, missing_only=missing_only)

"""Celery entry points for annotation: each loads its row and calls one service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from annotation.models import ImportBatch
from annotation.services.imports import runner

# Soft limit first: the service then marks the batch failed before the hard limit kills the worker.
IMPORT_TIME_LIMIT_S = settings.HEMALOOP_IMPORT_TIME_LIMIT_S


# A redelivered task (its worker process was killed) may find the batch's heartbeat still fresh: it looks
# again a minute later, five times at most, well inside ImportBatch.STALE_AFTER. Once the heartbeats have
# stopped for TAKEOVER_AFTER it resumes the batch; a worker that keeps beating finishes the batch alone.
@shared_task(
    acks_late=True,
    soft_time_limit=IMPORT_TIME_LIMIT_S,
    time_limit=IMPORT_TIME_LIMIT_S + 120,
    autoretry_for=(runner.ImportBatchBusy,),
    default_retry_delay=int(runner.TAKEOVER_AFTER.total_seconds()),
    max_retries=5,
)
def import_batch_process(batch_id: int) -> str:
    """Process one import batch; a redelivered task resumes the batch, a finished one is left as is."""
    batch = ImportBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        return "missing"
    return runner.import_batch_process(batch=batch).status

"""Celery entry points for annotation: each loads its row and calls one service."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from annotation.models import ImportBatch
from annotation.services.imports import runner

# Soft limit first: the service then marks the batch failed before the hard limit kills the worker.
IMPORT_TIME_LIMIT_S = settings.HEMALOOP_IMPORT_TIME_LIMIT_S


@shared_task(acks_late=True, soft_time_limit=IMPORT_TIME_LIMIT_S, time_limit=IMPORT_TIME_LIMIT_S + 120)
def import_batch_process(batch_id: int) -> str:
    """Process one import batch; a redelivered task resumes the batch, a finished one is left as is."""
    batch = ImportBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        return "missing"
    return runner.import_batch_process(batch=batch).status

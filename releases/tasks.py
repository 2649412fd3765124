"""Celery entry points for releases (default queue): each takes its job's id and calls one service."""

from __future__ import annotations

from celery import shared_task

from releases import conf
from releases.services import archive as archive_services

# Soft limit first: the service then marks the build failed before the hard limit kills the worker.
ARCHIVE_TIME_LIMIT_S = conf.archive_time_limit_s()


@shared_task(acks_late=True, soft_time_limit=ARCHIVE_TIME_LIMIT_S, time_limit=ARCHIVE_TIME_LIMIT_S + 120)
def dataset_archive_build(archive_id: int) -> str:
    """Build one version's archive; a redelivered task finds the build claimed or finished and leaves it be."""
    archive = archive_services.archive_build(archive_id=archive_id)
    return archive.status if archive is not None else "missing"

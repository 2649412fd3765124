"""Asking for a version's archive: queue its build unless one is under way or the file is already in storage.

The build itself (releases.services.archive) is what the task runs; this module enqueues that task.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.jobs import job_is_stale, job_send_on_commit
from core.roles import Role, role_require
from releases import selectors, tasks
from releases.models import DatasetArchive, DatasetVersion
from releases.services.archive import TEXT_MEMBERS

Status = DatasetArchive.Status


def archive_build_start(*, version: DatasetVersion, requested_by: AbstractBaseUser) -> DatasetArchive:
    """Queue the build of a version's archive, unless it is queued, building, or built and in storage."""
    role_require(requested_by, Role.RESEARCHER, Role.ADMIN, action="build dataset archives")
    with transaction.atomic():
        archive = DatasetArchive.objects.select_for_update().get(version=version)
        if _under_way(archive=archive) or selectors.archive_downloadable(archive=archive):
            return archive
        archive.status = Status.QUEUED
        archive.requested_by = requested_by
        archive.requested_at = timezone.now()
        archive.started_at = archive.heartbeat_at = archive.finished_at = None
        archive.done = 0
        archive.total = version.image_count + TEXT_MEMBERS
        archive.error = ""
        archive.save()
        job_send_on_commit(job=archive, task=tasks.dataset_archive_build)
    return archive


def _under_way(*, archive: DatasetArchive) -> bool:
    """A build a worker holds, or one still waiting for its task.

    A stale running build lost its worker (the reaper fails it), and a build queued for longer than the stale
    limit lost its task (its broker message was lost): either may be asked for again. A late copy of
    the old task then finds the row claimed and does nothing.
    """
    if archive.status == Status.RUNNING:
        return not job_is_stale(archive)
    if archive.status == Status.QUEUED:
        return archive.requested_at >= timezone.now() - DatasetArchive.stale_after()
    return False

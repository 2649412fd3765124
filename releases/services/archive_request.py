"""Asking for a version's archive: queue its build unless one is under way or the file is already in storage.

The build itself (releases.services.archive) is what the task runs; this module enqueues that task.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.roles import Role, role_require
from releases import conf, selectors, tasks
from releases.models import DatasetArchive, DatasetVersion
from releases.services.archive import TEXT_MEMBERS

Status = DatasetArchive.Status


def archive_build_start(*, version: DatasetVersion, requested_by: AbstractBaseUser) -> DatasetArchive:
    """Queue the build of a version's archive, unless it is queued, building, or built and in storage."""
    role_require(requested_by, Role.RESEARCHER, Role.ADMIN, action="build dataset archives")
    with transaction.atomic():
        archive = DatasetArchive.objects.select_for_update().get(version=version)
        if archive.status in selectors.ARCHIVE_ACTIVE and not _stale(archive=archive):
            return archive
        if selectors.archive_downloadable(archive=archive):
            return archive
        archive.status = Status.PENDING
        archive.requested_by = requested_by
        archive.requested_at = timezone.now()
        archive.started_at = archive.finished_at = None
        archive.members_written = 0
        archive.members_total = version.image_count + TEXT_MEMBERS
        archive.error = ""
        archive.save()
        transaction.on_commit(lambda: tasks.dataset_archive_build.delay(archive.pk))
    return archive


def _stale(*, archive: DatasetArchive) -> bool:
    """A queued or running build older than the task's hard time limit: its worker is gone."""
    since = archive.started_at or archive.requested_at
    return since is None or timezone.now() - since > timedelta(seconds=conf.archive_time_limit_s() + 300)

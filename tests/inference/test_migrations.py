"""Migrating scoring jobs written before they became core jobs: each row keeps its times and who asked, and a job
still queued (its task message names a model version, which no worker reads any more) is failed with a note."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from core.jobs import JobStatus
from inference.models import ScoringJob
from training.models import ModelVersion

BEFORE = [("inference", "0003_scoring_job_running_at")]
AFTER = [("inference", "0004_scoring_job_is_a_core_job")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


# PostgreSQL's DDL is transactional: the test's rollback gives the later tests the latest schema back.
@pytest.mark.django_db
def test_old_scoring_jobs_keep_their_data_under_the_new_names(make_version, admin_user):
    version_id = make_version(ModelVersion.Status.ACTIVE).pk
    old = _migrate(BEFORE).get_model("inference", "ScoringJob")
    queued_at = timezone.now() - timedelta(hours=2)
    claimed_at = queued_at + timedelta(minutes=1)
    beat_at = claimed_at + timedelta(minutes=5)
    common = {"model_version_id": version_id, "started_by_id": admin_user.pk, "total": 10}
    finished = old.objects.create(status="succeeded", done=10, running_at=claimed_at, updated_at=beat_at, **common)
    running = old.objects.create(status="running", done=4, running_at=claimed_at, updated_at=beat_at, **common)
    queued = old.objects.create(status="queued", **common)
    old.objects.filter(pk__in=[finished.pk, running.pk, queued.pk]).update(started_at=queued_at)

    _migrate(AFTER)

    rows = {job.pk: job for job in ScoringJob.objects.all()}
    done, live, waiting = rows[finished.pk], rows[running.pk], rows[queued.pk]
    assert (done.status, done.done, done.requested_by_id) == (JobStatus.SUCCEEDED, 10, admin_user.pk)
    assert (done.requested_at, done.started_at, done.heartbeat_at) == (queued_at, claimed_at, beat_at)
    assert (live.status, live.done, live.heartbeat_at) == (JobStatus.RUNNING, 4, beat_at)  # the reaper's to judge
    assert waiting.status == JobStatus.FAILED
    assert "Rescore" in waiting.error
    assert waiting.finished_at is not None

    _migrate(BEFORE)  # and back: the queued job is queued again
    assert old.objects.get(pk=queued.pk).status == "queued"

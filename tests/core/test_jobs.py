"""The shared job mechanism (core.jobs), on scoring-job rows: a claim is taken once, heartbeats stop a worker whose
job was reaped, a reaped job keeps its outcome, one progress shape, and the reaper fails only stale running jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.jobs import JobStatus, job_claim, job_finish, job_heartbeat, job_progress
from core.tasks import jobs_reap_stale_task
from inference.models import ScoringJob
from releases.services.versions import dataset_version_create
from tests.factories.annotation import batch_make, image_make
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

PROGRESS_KEYS = {
    "id",
    "kind",
    "status",
    "status_display",
    "finished",
    "done",
    "total",
    "percent",
    "per_second",
    "eta_seconds",
    "error",
    "requested_at",
    "started_at",
    "finished_at",
}


@pytest.fixture
def version(admin_user) -> ModelVersion:
    batch = batch_make(created_by=admin_user)
    image_make(batch=batch, final_label="neutrophil")
    image_make(batch=batch, final_label="lymphocyte")
    run = TrainingRun.objects.create(
        dataset_version=dataset_version_create(created_by=admin_user),
        profile="smoke",
        config={},
        requested_by=admin_user,
        status=JobStatus.SUCCEEDED,
    )
    return ModelVersion.objects.create(run=run, out_dir="models/none", config={}, temperature=1.0, metrics={})


def _silent_for(job: ScoringJob, delta: timedelta) -> None:
    ScoringJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - delta)


def test_a_queued_job_is_claimed_once(version):
    job = ScoringJob.objects.create(model_version=version)

    claimed = job_claim(model=ScoringJob, job_id=job.pk)

    assert claimed.status == JobStatus.RUNNING
    assert claimed.started_at is not None
    assert claimed.heartbeat_at == claimed.started_at
    assert job_claim(model=ScoringJob, job_id=job.pk) is None  # a redelivered task gets nothing to run


def test_heartbeats_record_progress_and_tell_the_worker_to_stop_once_reaped(version):
    job = job_claim(model=ScoringJob, job_id=ScoringJob.objects.create(model_version=version).pk)

    assert job_heartbeat(job=job, done=5, total=10) is True
    assert ScoringJob.objects.values_list("done", "total").get(pk=job.pk) == (5, 10)

    _silent_for(job, ScoringJob.STALE_AFTER + timedelta(minutes=1))
    jobs_reap_stale_task()

    assert job_heartbeat(job=job, done=6) is False
    row = ScoringJob.objects.get(pk=job.pk)
    assert (row.status, row.done) == (JobStatus.FAILED, 5)


def test_finishing_a_reaped_job_keeps_the_reapers_outcome(version):
    job = job_claim(model=ScoringJob, job_id=ScoringJob.objects.create(model_version=version).pk)
    _silent_for(job, timedelta(hours=1))
    jobs_reap_stale_task()

    finished = job_finish(job=job, status=JobStatus.SUCCEEDED, done=10)

    assert finished.status == JobStatus.FAILED
    assert "stopped reporting" in finished.error
    assert finished.done == 0
    with pytest.raises(ValueError, match="not a finished status"):
        job_finish(job=finished, status=JobStatus.RUNNING)


def test_progress_has_the_common_keys_a_rate_and_the_time_left(version):
    now = timezone.now()
    running = ScoringJob.objects.create(
        model_version=version, status=JobStatus.RUNNING, started_at=now - timedelta(seconds=10), done=20, total=100
    )
    queued = ScoringJob.objects.create(model_version=version, total=100)
    succeeded = ScoringJob.objects.create(
        model_version=version,
        status=JobStatus.SUCCEEDED,
        started_at=now - timedelta(seconds=50),
        finished_at=now - timedelta(seconds=10),
        done=80,
        total=80,
    )

    live = job_progress(running, now=now)
    assert set(live) == PROGRESS_KEYS
    assert (live["kind"], live["status"], live["status_display"], live["finished"]) == (
        "scoring",
        "running",
        "Running",
        False,
    )
    assert (live["percent"], live["per_second"], live["eta_seconds"]) == (20, 2.0, 40)
    waiting = job_progress(queued, now=now)
    assert (waiting["percent"], waiting["per_second"], waiting["eta_seconds"], waiting["started_at"]) == (
        0,
        None,
        None,
        None,
    )
    done = job_progress(succeeded, now=now)
    # The rate counts from the claim to the finish, not to now; a finished job has no time left.
    assert (done["finished"], done["percent"], done["per_second"], done["eta_seconds"]) == (True, 100, 2.0, None)
    assert done["finished_at"] == succeeded.finished_at.isoformat()


def test_the_reaper_fails_only_running_jobs_whose_heartbeats_stopped(version):
    def make(status: str, silent: timedelta) -> ScoringJob:
        job = ScoringJob.objects.create(model_version=version, status=status, requested_at=timezone.now() - silent)
        _silent_for(job, silent)
        return job

    stale = make(JobStatus.RUNNING, ScoringJob.STALE_AFTER + timedelta(minutes=1))
    alive = make(JobStatus.RUNNING, ScoringJob.STALE_AFTER - timedelta(minutes=1))
    waiting = make(JobStatus.QUEUED, timedelta(hours=2))
    old = make(JobStatus.SUCCEEDED, timedelta(hours=2))

    assert jobs_reap_stale_task()["scoring"] == 1

    statuses = dict(ScoringJob.objects.values_list("pk", "status"))
    assert statuses == {
        stale.pk: JobStatus.FAILED,
        alive.pk: JobStatus.RUNNING,
        waiting.pk: JobStatus.QUEUED,
        old.pk: JobStatus.SUCCEEDED,
    }
    stale.refresh_from_db()
    assert stale.finished_at is not None
    assert "no heartbeat" in stale.error

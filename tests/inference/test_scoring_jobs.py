"""A scoring job's life as the inference queue runs it: an activation queues one the Scoring page shows at once, a
worker claims it once and reports heartbeats, and a job reaped while it runs stops and stays failed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import CellImage
from core.jobs import JobStatus
from core.tasks import jobs_reap_stale_task
from inference import tasks
from inference.models import Prediction, ScoringJob
from inference.services.scoring import scoring_job_run
from inference.services.starts import scoring_enqueue
from tests.factories.annotation import image_make
from tests.inference.fakes import FakeEnsemble
from training.services.versions import model_version_activate

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The job ids handed to the inference queue, which runs nothing here."""
    ids: list[int] = []
    monkeypatch.setattr(tasks.scoring_job_process_task, "delay", ids.append)
    return ids


def test_activation_queues_a_job_that_the_scoring_page_shows_at_once(
    make_version, admin_user, client_for, sent, django_capture_on_commit_callbacks
):
    version = make_version()

    with django_capture_on_commit_callbacks(execute=True):
        model_version_activate(version=version, actor=admin_user)

    job = ScoringJob.objects.get()
    assert (job.model_version, job.scope, job.status) == (version, "all", JobStatus.QUEUED)
    assert job.requested_by == admin_user
    assert job.total == CellImage.objects.count()
    assert sent == [job.pk]
    client = client_for(admin_user)
    page = client.get("/inference/scoring/").content.decode()
    assert f'data-progress-url="/inference/scoring/jobs/{job.pk}/progress/"' in page
    assert "Queued" in page
    progress = client.get(f"/inference/scoring/jobs/{job.pk}/progress/").json()
    assert (progress["kind"], progress["status"], progress["finished"]) == ("scoring", "queued", False)


def test_activating_again_while_the_version_scores_the_whole_pool_queues_nothing_more(
    make_version, admin_user, sent, django_capture_on_commit_callbacks
):
    first, second = make_version(), make_version()
    with django_capture_on_commit_callbacks(execute=True):
        model_version_activate(version=first, actor=admin_user)
        model_version_activate(version=second, actor=admin_user)
        model_version_activate(version=first, actor=admin_user)  # a rollback while its first pass is queued

    assert sorted(ScoringJob.objects.values_list("model_version_id", flat=True)) == sorted([first.pk, second.pk])
    assert len(sent) == 2


def test_a_task_delivered_twice_runs_the_job_once(make_version, batch, monkeypatch):
    ensemble = FakeEnsemble().install(monkeypatch)
    version = make_version()
    image_make(batch=batch)
    job = scoring_enqueue(model_version=version, scope=ScoringJob.Scope.ALL, actor=None)
    pool = CellImage.objects.count()

    assert tasks.scoring_job_process_task.delay(job.pk).get() == f"scored {pool}"
    assert tasks.scoring_job_process_task.delay(job.pk).get() == "not queued"

    assert len(ensemble.scored) == pool
    job.refresh_from_db()
    assert (job.status, job.done) == (JobStatus.SUCCEEDED, pool)


def test_the_worker_sends_a_heartbeat_with_its_progress_after_every_chunk(make_version, batch, monkeypatch):
    FakeEnsemble().install(monkeypatch)
    version = make_version()
    for _ in range(5):
        image_make(batch=batch)
    job = scoring_enqueue(model_version=version, scope=ScoringJob.Scope.ALL, actor=None)
    seen = []

    def look(done: int, total: int) -> None:
        row = ScoringJob.objects.get(pk=job.pk)
        seen.append((row.status, row.done, row.total, row.heartbeat_at))

    scoring_job_run(job_id=job.pk, batch_size=2, chunk=2, on_progress=look)

    assert [(status, done, total) for status, done, total, _ in seen] == [
        ("running", 2, 7),
        ("running", 4, 7),
        ("running", 6, 7),
        ("running", 7, 7),
    ]
    beats = [beat for *_, beat in seen]
    assert beats == sorted(beats)
    assert beats[-1] > beats[0]


def test_a_job_reaped_while_it_runs_stops_and_keeps_the_reapers_outcome(make_version, batch, monkeypatch):
    FakeEnsemble().install(monkeypatch)
    version = make_version()
    for _ in range(5):
        image_make(batch=batch)
    job = scoring_enqueue(model_version=version, scope=ScoringJob.Scope.ALL, actor=None)

    def worker_seems_dead(done: int, total: int) -> None:
        ScoringJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        jobs_reap_stale_task()

    stopped = scoring_job_run(job_id=job.pk, batch_size=2, chunk=2, on_progress=worker_seems_dead)

    assert (stopped.status, stopped.done) == (JobStatus.FAILED, 2)
    assert "stopped reporting" in stopped.error
    assert Prediction.objects.filter(model_version=version).count() < CellImage.objects.count()

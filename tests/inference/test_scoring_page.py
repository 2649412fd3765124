"""The Scoring page: Rescore queues a pass on the inference queue (eager in tests), progress as JSON, refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import CellImage
from core.jobs import JobStatus
from core.tasks import jobs_reap_stale_task
from inference.models import Prediction, ScoringJob
from inference.services.settings import al_settings_update
from tests.factories.annotation import image_make
from tests.inference.fakes import FakeEnsemble
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def active(make_version):
    return make_version(ModelVersion.Status.ACTIVE)


def test_rescore_runs_a_job_that_scores_the_pool_and_orders_the_queue(
    active, batch, admin_user, client_for, monkeypatch, django_capture_on_commit_callbacks
):
    ensemble = FakeEnsemble().install(monkeypatch)
    al_settings_update(actor=admin_user, max_class_share=1.0)  # the fake predicts one class for everything
    unlabeled = [image_make(batch=batch) for _ in range(3)]
    pool = CellImage.objects.count()  # the fixture's two labeled images are scored too (for the review list)
    client = client_for(admin_user)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/inference/scoring/rescore/", follow=True)

    assert "is queued for model version" in response.content.decode()
    job = ScoringJob.objects.get()
    assert (job.status, job.done, job.total, job.scope) == ("succeeded", pool, pool, "all")
    assert job.requested_by == admin_user
    assert len(ensemble.scored) == pool
    assert Prediction.objects.filter(model_version=active).count() == pool
    assert set(CellImage.objects.filter(priority__gt=0).values_list("pk", flat=True)) == {i.pk for i in unlabeled}
    progress = client.get(f"/inference/scoring/jobs/{job.pk}/progress/").json()
    timing = {key: progress.pop(key) for key in ("per_second", "eta_seconds", "speed", "started_at", "finished_at")}
    assert progress == {
        "id": job.pk,
        "kind": "scoring",
        "model_version": active.pk,
        "status": "succeeded",
        "status_display": "Succeeded",
        "scope": "all",
        "done": pool,
        "total": pool,
        "percent": 100,
        "finished": True,
        "error": "",
        "requested_at": job.requested_at.isoformat(),
    }
    assert timing["started_at"] is not None  # the worker's claim set it
    assert timing["finished_at"] >= timing["started_at"]
    assert timing["per_second"] > 0
    assert timing["eta_seconds"] is None
    assert timing["speed"].startswith(f"{pool} images in ")
    page = client.get("/inference/scoring/").content.decode()
    assert f'data-job="{job.pk}"' in page
    assert 'data-progress-url="' not in page


def test_a_queued_job_shows_live_and_blocks_a_second_rescore(active, batch, admin_user, client_for):
    image_make(batch=batch)
    client = client_for(admin_user)

    client.post("/inference/scoring/rescore/")  # no worker runs it here (on_commit never fires in this test)

    job = ScoringJob.objects.get()
    assert job.status == JobStatus.QUEUED
    page = client.get("/inference/scoring/").content.decode()
    assert f'data-progress-url="/inference/scoring/jobs/{job.pk}/progress/"' in page
    assert 'aria-valuenow="0"' in page
    assert client.get(f"/inference/scoring/jobs/{job.pk}/progress/").json()["finished"] is False
    again = client.post("/inference/scoring/rescore/", follow=True).content.decode()
    assert f"Scoring job {job.pk}" in again
    assert "still queued" in again
    assert ScoringJob.objects.count() == 1


def test_a_stale_job_does_not_block_rescore_and_only_the_reaper_fails_it(
    active, admin_user, client_for, api_client_for
):
    stale = ScoringJob.objects.create(model_version=active, status=JobStatus.RUNNING, total=10, done=3)
    ScoringJob.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    client, api = client_for(admin_user), api_client_for(admin_user)

    client.post("/inference/scoring/rescore/")

    assert ScoringJob.objects.filter(status=JobStatus.QUEUED).count() == 1
    # Reading never reaps: the page, its polling JSON and the API leave the dead job as it is.
    assert f'data-job="{stale.pk}"' in client.get("/inference/scoring/").content.decode()
    assert client.get(f"/inference/scoring/jobs/{stale.pk}/progress/").json()["status"] == "running"
    assert api.get(f"/api/inference/scoring/jobs/{stale.pk}/").json()["status"] == "running"
    assert api.get("/api/inference/scoring/jobs/").status_code == 200
    stale.refresh_from_db()
    assert stale.status == JobStatus.RUNNING

    assert jobs_reap_stale_task()["scoring"] == 1

    stale.refresh_from_db()
    assert stale.status == JobStatus.FAILED
    assert "stopped reporting" in stale.error
    assert ScoringJob.objects.filter(status=JobStatus.QUEUED).count() == 1  # a queued job is not stale


def test_jobs_show_their_speed_and_time_left_from_when_a_worker_took_them(active, admin_user, client_for):
    now = timezone.now()
    # Queued long before a worker took it: the wait does not count against the speed.
    running = ScoringJob.objects.create(
        model_version=active,
        status=JobStatus.RUNNING,
        # Ten minutes of work, so the seconds a loaded machine takes to reach the requests below barely move the speed.
        total=156_000,
        done=120_000,
        started_at=now - timedelta(minutes=10),
    )
    finished = ScoringJob.objects.create(
        model_version=active,
        status=JobStatus.SUCCEEDED,
        total=600,
        done=600,
        started_at=now - timedelta(minutes=12),
        finished_at=now - timedelta(minutes=2),
    )
    ScoringJob.objects.filter(pk__in=[running.pk, finished.pk]).update(requested_at=now - timedelta(hours=3))
    client = client_for(admin_user)

    live = client.get(f"/inference/scoring/jobs/{running.pk}/progress/").json()
    assert live["per_second"] == pytest.approx(200, rel=0.05)
    assert live["eta_seconds"] == pytest.approx(180, rel=0.05)  # 36,000 more at 200 images/s
    assert live["speed"].startswith(("19", "20"))
    assert live["speed"].endswith("images/s · about 3 min left")
    done = client.get(f"/inference/scoring/jobs/{finished.pk}/progress/").json()
    assert (done["per_second"], done["eta_seconds"]) == (1.0, None)
    assert done["speed"] == "600 images in 10 min · 1.0 images/s"
    page = client.get("/inference/scoring/").content.decode()
    assert "600 images in 10 min · 1.0 images/s" in page
    assert "about 3 min left" in page


def test_a_pass_of_a_few_seconds_shows_tenths(active, admin_user, client_for):
    now = timezone.now()
    quick = ScoringJob.objects.create(
        model_version=active,
        status=JobStatus.SUCCEEDED,
        total=8,
        done=8,
        started_at=now - timedelta(seconds=0.5),
        finished_at=now,
    )
    progress = client_for(admin_user).get(f"/inference/scoring/jobs/{quick.pk}/progress/").json()
    assert progress["speed"] == "8 images in 0.5 s · 16.0 images/s"


def test_a_job_no_worker_has_taken_shows_no_speed(active, admin_user, client_for):
    queued = ScoringJob.objects.create(model_version=active, status=JobStatus.QUEUED, total=10)
    progress = client_for(admin_user).get(f"/inference/scoring/jobs/{queued.pk}/progress/").json()
    assert (progress["per_second"], progress["eta_seconds"], progress["speed"]) == (None, None, "")


def test_rescore_is_refused_without_an_active_model(make_version, admin_user, client_for):
    make_version()  # a candidate only

    response = client_for(admin_user).post("/inference/scoring/rescore/", follow=True)

    assert "No model version is active" in response.content.decode()
    assert not ScoringJob.objects.exists()


def test_a_failing_pass_shows_its_error(active, batch, admin_user, client_for, django_capture_on_commit_callbacks):
    image_make(batch=batch)  # the version has no ensemble on disk: the pass fails
    client = client_for(admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/inference/scoring/rescore/").status_code == 302
    job = ScoringJob.objects.get()
    assert job.status == JobStatus.FAILED
    progress = client.get(f"/inference/scoring/jobs/{job.pk}/progress/").json()
    assert progress["finished"] is True
    assert "ensemble.json" in progress["error"]


def test_the_api_rescores_on_demand_and_reports_progress(
    active, batch, admin_user, api_client_for, monkeypatch, django_capture_on_commit_callbacks
):
    ensemble = FakeEnsemble().install(monkeypatch)
    image_make(batch=batch)
    pool = CellImage.objects.count()
    api = api_client_for(admin_user)

    with django_capture_on_commit_callbacks(execute=True):
        started = api.post("/api/inference/scoring/jobs/")
    assert started.status_code == 202, started.content
    job_id = started.json()["id"]
    assert api.get(f"/api/inference/scoring/jobs/{job_id}/").json()["status"] == "succeeded"
    assert [row["id"] for row in api.get("/api/inference/scoring/jobs/").json()] == [job_id]
    assert len(ensemble.scored) == pool

    # A pass that is still queued blocks another one, with the reason.
    api.post("/api/inference/scoring/jobs/")  # on_commit does not fire here: the job stays queued
    refused = api.post("/api/inference/scoring/jobs/")
    assert refused.status_code == 409
    assert "still queued" in refused.json()["detail"]


def test_a_rescore_asked_for_while_redis_is_down_fails_at_once_and_does_not_block_the_next(
    active, admin_user, api_client_for, broker_unreachable, django_capture_on_commit_callbacks
):
    api = api_client_for(admin_user)
    for _ in range(2):  # the first failed pass does not hold Rescore as "still queued"
        with django_capture_on_commit_callbacks(execute=True):
            started = api.post("/api/inference/scoring/jobs/")
        assert started.status_code == 202, started.content
        job = api.get(f"/api/inference/scoring/jobs/{started.json()['id']}/").json()
        assert job["status"] == "failed"
        assert job["error"].startswith("Could not reach the task queue")

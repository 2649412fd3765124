"""Retraining through the API and pages with the smoke profile on real demo images (eager Celery)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.jobs import JobStatus
from core.tasks import jobs_reap_stale_task
from releases.services.versions import dataset_version_create
from tests.factories.annotation import batch_make, image_make
from tests.factories.training import ModelVersionFactory, TrainingRunFactory
from training.models import ModelVersion, TrainingRun
from training.services import execute
from training.services.versions import model_version_activate
from training.tasks import training_run

pytestmark = pytest.mark.django_db


def _start(api, captured, **body):
    with captured(execute=True):
        return api.post("/api/training/runs/", {"profile": "smoke", **body}, format="json")


def dataset_version_create_for(user):
    """A frozen version with two synthetic labeled images (for rows that need a version but no training)."""
    batch = batch_make(created_by=user)
    for code in ("neutrophil", "lymphocyte"):
        image_make(batch=batch, final_label=code)
    return dataset_version_create(created_by=user)


def _version_with_run(*, admin_user, status=ModelVersion.Status.CANDIDATE, f1=0.5) -> ModelVersion:
    """A registered model version without training (for activation and staleness rules)."""
    return ModelVersionFactory(
        run__dataset_version=dataset_version_create_for(admin_user),
        run__requested_by=admin_user,
        out_dir="models/x",
        status=status,
        metrics={"ensemble": {"test": {"macro_f1": f1}}},
    )


def test_admin_retrains_and_activates_through_the_api(
    labeled_demo, admin_user, researcher, api_client_for, client_for, django_capture_on_commit_callbacks
):
    labeled_demo()
    api = api_client_for(admin_user)
    response = _start(api, django_capture_on_commit_callbacks)
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]

    run = api_client_for(researcher).get(f"/api/training/runs/{run_id}/").json()
    assert run["status"] == "succeeded", run["error"]
    assert run["percent"] == 100
    assert run["finished"]
    assert (run["kind"], run["status_display"], run["requested_by"]) == ("training", "Succeeded", admin_user.username)
    assert 0 < run["done"] <= run["total"]  # batches; early stopping may end a model before max_epochs
    assert run["requested_at"] <= run["started_at"] <= run["finished_at"]
    assert run["per_second"] > 0
    assert run["eta_seconds"] is None
    assert {row["model"] for row in run["history"]} == {"test_efficientnet", "test_efficientnet_gn"}
    assert all("val_macro_f1" in row and "val_loss" in row for row in run["history"])
    assert run["worker_host"]
    assert run["heartbeat_at"]
    version_id = run["model_version"]
    assert training_run(run_id) == "succeeded"  # delivered again: not trained again
    assert ModelVersion.objects.filter(run_id=run_id).count() == 1

    detail = api_client_for(researcher).get(f"/api/training/models/{version_id}/").json()
    assert detail["status"] == "candidate"
    ensemble = detail["metrics"]["ensemble"]["test"]
    assert 0.0 <= ensemble["accuracy"] <= 1.0
    assert len(ensemble["accuracy_ci95"]) == 2
    assert set(detail["metrics"]["models"]) == {"test_efficientnet", "test_efficientnet_gn"}
    assert (Path(settings.MEDIA_ROOT) / detail["out_dir"] / "ensemble.json").is_file()
    assert {"training_curves", "confusion_ensemble", "roc_ensemble", "reliability_ensemble"} <= set(detail["plots"])

    page = client_for(researcher).get(f"/training/models/{version_id}/")
    assert page.status_code == 200
    assert b"Ensemble (soft voting)" in page.content
    assert b"McNemar" in page.content
    assert b"Activate" not in page.content  # researchers read, admins activate
    plot = client_for(researcher).get(f"/training/models/{version_id}/plots/roc_ensemble.png")
    assert plot.status_code == 200
    assert b"".join(plot.streaming_content).startswith(b"\x89PNG")

    activated = api.post(f"/api/training/models/{version_id}/activate/")
    assert activated.status_code == 200
    assert activated.json()["status"] == "active"
    home = client_for(admin_user).get("/training/").content.decode()
    assert f"version {version_id}</strong></a>, ensemble macro-F1" in home


def test_run_page_shows_live_progress_and_the_cancel_button(admin_user, client_for):
    run = TrainingRunFactory(
        dataset_version=dataset_version_create_for(admin_user),
        requested_by=admin_user,
        status=JobStatus.RUNNING,
        model_count=2,
        max_epochs=4,
        epoch=3,
        batch=5,
        batches_total=10,
        done=25,  # 2 epochs of 10 batches, then 5 of the third, of 2 models x 4 epochs x 10 batches
        total=80,
        heartbeat_at=timezone.now(),
        history=[{"model": "m", "model_index": 0, "epoch": 1, "val_macro_f1": 0.4, "val_loss": 1.2}],
    )
    content = client_for(admin_user).get(f"/training/runs/{run.pk}/").content.decode()
    assert f'data-url="/api/training/runs/{run.pk}/"' in content
    assert "Cancel run" in content
    assert "31%" in content
    assert '"val_macro_f1": 0.4' in content  # the history for the chart


def test_a_second_start_while_one_runs_is_refused_with_409(
    labeled_demo, admin_user, api_client_for, django_capture_on_commit_callbacks
):
    labeled_demo()
    version = dataset_version_create(created_by=admin_user)
    queued = TrainingRunFactory(dataset_version=version, requested_by=admin_user)
    response = _start(api_client_for(admin_user), django_capture_on_commit_callbacks, dataset_version=version.number)
    assert response.status_code == 409
    assert f"run {queued.pk} is queued" in response.json()["detail"]
    assert TrainingRun.objects.count() == 1
    # The guard is the database's, so a race past the service's own check still fails.
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRunFactory(
            dataset_version=version,
            requested_by=admin_user,
            status=JobStatus.RUNNING,
        )


def test_a_version_with_one_class_is_refused(
    labeled_demo, admin_user, api_client_for, django_capture_on_commit_callbacks
):
    labeled_demo(("basophil",))
    response = _start(api_client_for(admin_user), django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert "training needs at least 2" in response.json()["detail"]
    assert not TrainingRun.objects.exists()


def test_cancel_mid_run_ends_cancelled_without_a_version(
    labeled_demo, admin_user, api_client_for, monkeypatch, django_capture_on_commit_callbacks
):
    labeled_demo()
    active = _version_with_run(admin_user=admin_user, status=ModelVersion.Status.ACTIVE)
    api = api_client_for(admin_user)
    original = execute._RunProgress.on_batch_end

    def cancel_after_first_batch(self, step, total, loss):
        original(self, step, total, loss)
        # What an admin's click does while the worker trains: the API call, between two batches.
        assert api.post(f"/api/training/runs/{self.run_id}/cancel/").status_code == 200

    monkeypatch.setattr(execute._RunProgress, "on_batch_end", cancel_after_first_batch)
    run_id = _start(api, django_capture_on_commit_callbacks).json()["id"]
    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == JobStatus.CANCELLED
    assert run.cancel_requested
    assert run.batch == 1
    assert (run.done, run.total) == (1, 2 * run.max_epochs * run.batches_total)  # both smoke models, every epoch
    assert run.history == []
    assert not ModelVersion.objects.filter(run=run).exists()
    assert not (Path(settings.MEDIA_ROOT) / f"models/run-{run_id}").exists()
    active.refresh_from_db()
    assert active.status == ModelVersion.Status.ACTIVE
    assert api.post(f"/api/training/runs/{run_id}/cancel/").status_code == 400  # already finished


def test_cancelling_a_queued_run_ends_it_at_once_and_the_task_skips_it(labeled_demo, admin_user, api_client_for):
    labeled_demo()
    run = TrainingRunFactory(dataset_version=dataset_version_create(created_by=admin_user), requested_by=admin_user)
    assert api_client_for(admin_user).post(f"/api/training/runs/{run.pk}/cancel/").json()["status"] == "cancelled"
    assert training_run(run.pk) == "cancelled"  # a late or redelivered task does not train it
    assert not ModelVersion.objects.exists()


def test_a_stale_run_is_failed_by_the_reaper_not_by_looking_at_it(admin_user, researcher, api_client_for, client_for):
    active = _version_with_run(admin_user=admin_user, status=ModelVersion.Status.ACTIVE)
    stale = TrainingRunFactory(
        dataset_version=active.run.dataset_version,
        requested_by=admin_user,
        status=JobStatus.RUNNING,
        heartbeat_at=timezone.now() - timedelta(hours=2),
    )
    api, pages = api_client_for(researcher), client_for(researcher)
    for url in ("/api/training/runs/", f"/api/training/runs/{stale.pk}/"):
        assert api.get(url).status_code == 200
    for url in ("/", "/training/", f"/training/runs/{stale.pk}/"):
        assert pages.get(url).status_code == 200
    stale.refresh_from_db()
    assert stale.status == JobStatus.RUNNING  # a GET never writes

    assert jobs_reap_stale_task()["training"] == 1
    row = api.get(f"/api/training/runs/{stale.pk}/").json()
    assert (row["status"], row["finished"]) == ("failed", True)
    assert "no heartbeat" in row["error"]
    assert training_run(stale.pk) == "failed"  # redelivered to a new worker: not trained again
    active.refresh_from_db()
    assert active.status == ModelVersion.Status.ACTIVE
    assert ModelVersion.objects.count() == 1


def test_a_run_redelivered_while_another_worker_trains_it_is_left_alone(admin_user):
    beat = timezone.now() - timedelta(minutes=1)
    run = TrainingRun.objects.create(
        dataset_version=dataset_version_create_for(admin_user),
        profile="smoke",
        config={},
        requested_by=admin_user,
        status=JobStatus.RUNNING,
        heartbeat_at=beat,
        done=3,
        total=8,
    )
    assert training_run(run.pk) == "running"
    run.refresh_from_db()
    assert (run.heartbeat_at, run.done, run.worker_host) == (beat, 3, "")


def test_a_stale_run_does_not_block_a_new_start(
    labeled_demo, admin_user, api_client_for, django_capture_on_commit_callbacks
):
    labeled_demo()
    version = dataset_version_create(created_by=admin_user)
    dead = TrainingRun.objects.create(
        dataset_version=version,
        profile="smoke",
        config={},
        requested_by=admin_user,
        status=JobStatus.RUNNING,
        heartbeat_at=timezone.now() - timedelta(hours=2),
    )
    response = _start(api_client_for(admin_user), django_capture_on_commit_callbacks, dataset_version=version.number)
    assert response.status_code == 201, response.content
    dead.refresh_from_db()
    assert dead.status == JobStatus.FAILED
    assert "no heartbeat" in dead.error


def test_a_failing_run_records_the_error_and_leaves_the_active_model(
    labeled_demo, admin_user, api_client_for, django_capture_on_commit_callbacks
):
    labeled_demo()
    active = _version_with_run(admin_user=admin_user, status=ModelVersion.Status.ACTIVE)
    entry = active.run.dataset_version.entries.select_related("image").first()
    Path(default_storage.path(entry.image.file)).unlink()  # the worker cannot read one image
    response = _start(
        api_client_for(admin_user),
        django_capture_on_commit_callbacks,
        dataset_version=active.run.dataset_version.number,
    )
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.status == JobStatus.FAILED
    assert run.error
    assert not ModelVersion.objects.filter(run=run).exists()
    active.refresh_from_db()
    assert active.status == ModelVersion.Status.ACTIVE


def test_activating_retires_the_old_one_and_rolling_back_works(admin_user, make_user):
    first = _version_with_run(admin_user=admin_user)
    model_version_activate(version=first, actor=admin_user)
    second = _version_with_run(admin_user=admin_user)
    model_version_activate(version=second, actor=admin_user)
    first.refresh_from_db()
    assert (first.status, ModelVersion.objects.get(pk=second.pk).status) == ("retired", "active")
    model_version_activate(version=first, actor=admin_user)  # roll back
    assert list(ModelVersion.objects.filter(status="active")) == [first]
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=second.pk).update(status="active")


def test_auto_activation_takes_a_better_candidate(
    labeled_demo, admin_user, api_client_for, settings, django_capture_on_commit_callbacks
):
    labeled_demo()
    settings.HEMALOOP_AUTO_ACTIVATE = True
    worse = _version_with_run(admin_user=admin_user, status=ModelVersion.Status.ACTIVE, f1=-1.0)
    response = _start(
        api_client_for(admin_user), django_capture_on_commit_callbacks, dataset_version=worse.run.dataset_version.number
    )
    new = ModelVersion.objects.get(run_id=response.json()["id"])
    worse.refresh_from_db()
    assert (new.status, worse.status) == ("active", "retired")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_heartbeat_thread_keeps_a_run_alive_through_a_long_stretch_without_batches(admin_user, settings):
    """Final evaluation on a huge test split writes no batch progress; the run must not be reaped meanwhile."""
    settings.HEMALOOP_TRAINING_HEARTBEAT_SECONDS = 0.05
    settings.HEMALOOP_TRAINING_HEARTBEAT_MINUTES = 0.01  # stale after 0.6 s without a beat
    run = TrainingRunFactory(
        dataset_version=dataset_version_create_for(admin_user),
        requested_by=admin_user,
        status=JobStatus.RUNNING,
        heartbeat_at=timezone.now() - timedelta(hours=2),
    )
    with execute._heartbeat(run_id=run.pk):
        time.sleep(0.2)  # the first beat
        deadline = timezone.now() + timedelta(seconds=1.5)
        while timezone.now() < deadline:  # a long evaluation: nothing but the thread writes
            assert jobs_reap_stale_task()["training"] == 0
    run.refresh_from_db()
    assert run.status == JobStatus.RUNNING
    assert timezone.now() - run.heartbeat_at < timedelta(seconds=1)
    # Without the thread the same run goes stale and is reaped.
    deadline = timezone.now() + timedelta(seconds=1)
    while not jobs_reap_stale_task()["training"]:
        assert timezone.now() < deadline
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED


def test_a_run_started_while_the_broker_is_down_fails_at_once_and_does_not_block_the_next(
    labeled_demo, admin_user, api_client_for, broker_unreachable, django_capture_on_commit_callbacks
):
    labeled_demo()
    api = api_client_for(admin_user)
    response = _start(api, django_capture_on_commit_callbacks)
    # The start itself stands (its rows committed); the run says why no worker will take it.
    assert response.status_code == 201, response.content
    run = api.get(f"/api/training/runs/{response.json()['id']}/").json()
    assert run["status"] == "failed"
    assert run["error"].startswith("Could not reach the task queue")
    # Not left queued: the one-run-at-a-time rule does not refuse the next start.
    assert _start(api, django_capture_on_commit_callbacks).status_code == 201

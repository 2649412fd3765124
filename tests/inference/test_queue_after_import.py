"""After an import finishes: a cold-start order across cases without a model; with an active model, a pass that
scores only the images it has not scored yet, then re-orders the queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Case, CellImage
from core.jobs import JobStatus
from inference.models import Prediction, ScoringJob
from inference.services.settings import al_settings_update
from tests.factories.annotation import image_make
from tests.inference.fakes import FakeEnsemble
from tests.inference.pool import folder, import_folder
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_an_import_without_a_model_gets_a_cold_start_order_across_cases(
    admin_user, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        batch = import_folder(admin_user, folder(tmp_path, {"case-a": 5, "case-b": 2, "case-c": 1}))

    assert batch.status == JobStatus.SUCCEEDED
    assert batch.imported == 8
    queue = list(CellImage.objects.order_by("-priority", "id").values_list("priority", "case__code"))
    assert all(priority > 0 for priority, _ in queue)
    assert {code for _, code in queue[:3]} == {"case-a", "case-b", "case-c"}  # one per case first
    assert {code for _, code in queue[3:5]} == {"case-a", "case-b"}
    assert not ScoringJob.objects.exists()


def test_an_import_with_an_active_model_scores_only_the_new_images(
    admin_user, tmp_path, make_version, predict, monkeypatch, django_capture_on_commit_callbacks
):
    active = make_version(ModelVersion.Status.ACTIVE)
    old = list(CellImage.objects.all())  # the fixture's two labeled images, already scored
    for image in old:
        predict(active, image, {"neutrophil": 0.99})
    ensemble = FakeEnsemble().install(monkeypatch)
    al_settings_update(actor=admin_user, max_class_share=1.0)  # the fake predicts one class for everything

    with django_capture_on_commit_callbacks(execute=True):
        batch = import_folder(admin_user, folder(tmp_path, {"case-x": 3}))

    job = ScoringJob.objects.get()
    assert (job.scope, job.status, job.done, job.total) == ("missing", "succeeded", 3, 3)
    assert len(ensemble.scored) == 3
    new = set(CellImage.objects.filter(batch=batch).values_list("pk", flat=True))
    assert set(Prediction.objects.filter(model_version=active).values_list("image_id", flat=True)) == new | {
        image.pk for image in old
    }
    assert set(CellImage.objects.filter(priority__gt=0).values_list("pk", flat=True)) == new


def test_an_import_while_the_model_is_scoring_queues_nothing_more(
    admin_user, tmp_path, make_version, django_capture_on_commit_callbacks
):
    active = make_version(ModelVersion.Status.ACTIVE)
    running = ScoringJob.objects.create(model_version=active, status=JobStatus.RUNNING)

    with django_capture_on_commit_callbacks(execute=True):
        import_folder(admin_user, folder(tmp_path, {"case-y": 2}))

    assert list(ScoringJob.objects.values_list("pk", flat=True)) == [running.pk]


def test_a_pass_whose_worker_died_does_not_keep_an_import_from_being_scored(
    admin_user, tmp_path, make_version, monkeypatch, django_capture_on_commit_callbacks
):
    active = make_version(ModelVersion.Status.ACTIVE)
    dead = ScoringJob.objects.create(model_version=active, status=JobStatus.RUNNING)
    ScoringJob.objects.filter(pk=dead.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    FakeEnsemble().install(monkeypatch)

    with django_capture_on_commit_callbacks(execute=True):
        import_folder(admin_user, folder(tmp_path, {"case-z": 2}))

    new = ScoringJob.objects.exclude(pk=dead.pk).get()
    # Nothing had a prediction of the version yet: the fixture's two labeled images are scored too.
    assert (new.scope, new.status, new.done) == ("missing", "succeeded", CellImage.objects.count())
    assert ScoringJob.objects.get(pk=dead.pk).status == JobStatus.RUNNING  # left to the reaper


def test_a_batch_that_imported_nothing_changes_no_priority(
    admin_user, batch, tmp_path, django_capture_on_commit_callbacks
):
    image = image_make(batch=batch, case=Case.objects.create(code="old"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")

    with django_capture_on_commit_callbacks(execute=True):
        import_folder(admin_user, tmp_path)

    assert CellImage.objects.get(pk=image.pk).priority == 0.0

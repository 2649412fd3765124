"""The admin's active-learning settings: the queue order follows them, bad values are refused, only admins edit."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from annotation.models import CellImage
from config.celery import app
from core.roles import Role
from inference.models import ActiveLearningSettings
from inference.selectors import al_settings_get
from inference.services.selection import queue_priorities_update
from inference.services.settings import al_settings_update
from inference.services.starts import queue_priorities_refresh_start
from tests.factories.annotation import image_make
from tests.test_permissions_matrix import AL_FORM as FORM
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(batch, make_version, predict):
    """a: smallest margin; c: lowest top-1 probability (least confidence); b: confident."""
    version = make_version(ModelVersion.Status.ACTIVE)
    images = {name: image_make(batch=batch) for name in "abc"}
    predict(version, images["a"], {"neutrophil": 0.45, "lymphocyte": 0.44, "monocyte": 0.11})
    predict(version, images["b"], {"neutrophil": 0.9})
    predict(version, images["c"], {"neutrophil": 0.30, "lymphocyte": 0.25, "monocyte": 0.25, "eosinophil": 0.20})
    return images


def _first_in_queue() -> int:
    return CellImage.objects.order_by("-priority", "id").values_list("pk", flat=True).first()


def test_admin_changes_the_strategy_and_the_queue_follows(
    pool, admin_user, client_for, django_capture_on_commit_callbacks
):
    client = client_for(admin_user)

    # The re-ordering is a task on the inference queue (eager in tests), sent once the request's writes commit.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/inference/settings/", {**FORM, "strategy": "margin", "apply": "1"})
    assert response.status_code == 302
    assert _first_in_queue() == pool["a"].pk
    assert CellImage.objects.filter(priority__gt=0).count() == 2  # top_n

    with django_capture_on_commit_callbacks(execute=True):
        client.post("/inference/settings/", {**FORM, "strategy": "least_confidence", "apply": "1"})
    assert _first_in_queue() == pool["c"].pk
    settings_row = al_settings_get()
    assert (settings_row.strategy, settings_row.top_n, settings_row.updated_by) == ("least_confidence", 2, admin_user)
    # Saved without "apply": later passes (the scoring task) read it, the current order stays until then.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        client.post("/inference/settings/", {**FORM, "strategy": "margin"})
    assert callbacks == []
    assert _first_in_queue() == pool["c"].pk
    assert queue_priorities_update(model_version=ModelVersion.objects.get(status="active"))[0] == pool["a"].pk


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("exploration", "1.5"),
        ("exploration", "-0.1"),
        ("max_class_share", "0"),
        ("max_class_share", "1.2"),
        ("top_n", "0"),
        ("review_min_confidence", "0.3"),
        ("strategy", "vibes"),
    ],
)
def test_invalid_values_are_refused_with_a_message(pool, admin_user, client_for, field, value):
    response = client_for(admin_user).post("/inference/settings/", {**FORM, field: value})

    assert response.status_code == 200  # the form again, with its errors
    assert field in response.context["form"].errors
    assert 'class="errorlist' in response.content.decode()
    assert al_settings_get().strategy == "margin"
    assert al_settings_get().top_n == 1000


def test_the_service_validates_too(admin_user):
    with pytest.raises(ValidationError):
        al_settings_update(actor=admin_user, exploration=2.0)
    assert al_settings_get().exploration == pytest.approx(0.1)


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.ADJUDICATOR, Role.RESEARCHER])
def test_only_admins_change_settings(pool, make_user, role):
    # The pages' refusals are rows of tests/test_permissions_matrix.py; the services refuse on their own too.
    user = make_user(role)
    with pytest.raises(PermissionDenied):
        al_settings_update(actor=user, strategy="random")
    with pytest.raises(PermissionDenied):
        queue_priorities_refresh_start(actor=user)
    assert not CellImage.objects.filter(priority__gt=0).exists()
    assert al_settings_get().strategy == "margin"


def test_apply_now_without_a_model_uses_the_cold_start(
    batch, admin_user, client_for, django_capture_on_commit_callbacks
):
    images = [image_make(batch=batch) for _ in range(3)]

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(admin_user).post("/inference/settings/apply/", follow=True)

    assert "by the cold start (typical cells from the embedding index; stratified" in response.content.decode()
    assert sorted(CellImage.objects.filter(priority__gt=0).values_list("pk", flat=True)) == [i.pk for i in images]


def test_apply_now_queues_the_reordering_instead_of_doing_it_in_the_request(
    pool, admin_user, client_for, django_capture_on_commit_callbacks
):
    version = ModelVersion.objects.get(status="active")
    al_settings_update(actor=admin_user, strategy="least_confidence", top_n=2, exploration=0, max_class_share=1)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(admin_user).post("/inference/settings/apply/", follow=True)

    assert f"by model version {version.pk}&#x27;s predictions is queued" in response.content.decode()
    assert not CellImage.objects.filter(priority__gt=0).exists()  # the request itself changed nothing
    assert len(callbacks) == 1
    callbacks[0]()  # what the commit does: send the task (run eagerly here)
    assert _first_in_queue() == pool["c"].pk
    assert CellImage.objects.filter(priority__gt=0).count() == 2


def test_the_reordering_task_goes_to_the_inference_queue():
    assert app.amqp.router.route({}, "inference.tasks.queue_priorities_refresh")["queue"].name == "inference"


def test_the_django_admin_edits_the_single_row(admin_user, client_for):
    client = client_for(admin_user)
    row = al_settings_get()
    assert client.get("/admin/inference/activelearningsettings/").status_code == 302
    url = f"/admin/inference/activelearningsettings/{row.pk}/change/"
    refused = client.post(url, {**FORM, "exploration": "3"})
    assert refused.status_code == 200
    assert "exploration" in refused.context["adminform"].form.errors
    assert client.post(url, {**FORM, "strategy": "entropy"}).status_code == 302
    assert ActiveLearningSettings.objects.get().strategy == "entropy"
    assert client.get("/admin/inference/activelearningsettings/add/").status_code == 403

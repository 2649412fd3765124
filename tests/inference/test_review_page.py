"""The review list page: the active model's confident disagreements with final labels, with the model's opinion."""

from __future__ import annotations

import pytest

from annotation.models import CellImage, LabelStatus
from core.roles import Role
from inference.services.settings import al_settings_update
from tests.factories.annotation import image_make
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(batch, make_version, predict):
    """One confident disagreement, one less confident one, a confident agreement, an unlabeled image, and a
    candidate version that disagrees everywhere (only the active model counts)."""
    active, candidate = make_version(ModelVersion.Status.ACTIVE), make_version()
    images = {
        "disagree": image_make(batch=batch, final_label="neutrophil"),
        "disagree_more": image_make(batch=batch, final_label="monocyte"),
        "unsure": image_make(batch=batch, final_label="neutrophil"),
        "agree": image_make(batch=batch, final_label="lymphocyte"),
        "unlabeled": image_make(batch=batch),
    }
    predict(active, images["disagree"], {"lymphoblast": 0.93})
    predict(active, images["disagree_more"], {"myeloblast": 0.97})
    predict(active, images["unsure"], {"lymphocyte": 0.7})
    predict(active, images["agree"], {"lymphocyte": 0.99})
    predict(active, images["unlabeled"], {"lymphocyte": 0.99})
    for image in images.values():
        predict(candidate, image, {"basophil": 0.99})
    return images


@pytest.mark.parametrize("role", [Role.ADJUDICATOR, Role.ADMIN, Role.RESEARCHER])
def test_review_list_shows_the_confident_disagreements_with_the_models_opinion(seeded, make_user, client_for, role):
    response = client_for(make_user(role)).get("/inference/review/")

    assert response.status_code == 200
    rows = list(response.context["page"])
    assert [row.image_id for row in rows] == [seeded["disagree_more"].pk, seeded["disagree"].pk]  # most confident first
    html = response.content.decode()
    assert f'data-image="{seeded["disagree"].pk}"' in html
    assert "Lymphoblast" in html
    assert "93%" in html
    assert "Neutrophil" in html
    assert f"/annotation/images/{seeded['disagree'].pk}/" in html
    assert f"/annotation/images/{seeded['disagree'].pk}/thumb" in html
    for name in ("unsure", "agree", "unlabeled"):
        assert f'data-image="{seeded[name].pk}"' not in html
    assert "Basophil" not in html  # the candidate version's opinion never shows


def test_the_admins_threshold_and_unclassifiable_final_labels(seeded, admin_user, client_for, batch, predict):
    unclassifiable = image_make(batch=batch)
    CellImage.objects.filter(pk=unclassifiable.pk).update(label_status=LabelStatus.FINAL, final_label=None)
    predict(ModelVersion.objects.get(status="active"), unclassifiable, {"neutrophil": 0.95})
    al_settings_update(actor=admin_user, review_min_confidence=0.6)

    response = client_for(admin_user).get("/inference/review/")

    ids = [row.image_id for row in response.context["page"]]
    assert ids == [seeded["disagree_more"].pk, unclassifiable.pk, seeded["disagree"].pk, seeded["unsure"].pk]
    assert "Unclassifiable" in response.content.decode()


def test_review_list_is_paginated(batch, make_version, predict, admin_user, client_for):
    version = make_version(ModelVersion.Status.ACTIVE)
    for i in range(50):
        predict(
            version,
            image_make(batch=batch, final_label="neutrophil", with_thumbnail=False),
            {"lymphocyte": 0.91 + i / 1000},
        )
    client = client_for(admin_user)

    first, second = client.get("/inference/review/"), client.get("/inference/review/?page=2")

    assert len(first.context["page"]) == 48
    assert len(second.context["page"]) == 2
    assert first.context["page"][0].confidence > second.context["page"][0].confidence


def test_without_an_active_model_the_list_says_so(batch, make_version, predict, adjudicator, client_for):
    predict(make_version(), image_make(batch=batch, final_label="neutrophil"), {"lymphocyte": 0.99})
    html = client_for(adjudicator).get("/inference/review/").content.decode()
    assert 'id="no-model"' in html


def test_annotators_see_no_link_to_the_review_list(seeded, annotator, client_for):
    assert "/inference/" not in client_for(annotator).get("/").content.decode()

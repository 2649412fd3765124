"""Blinding holds: annotators never see the model's scores, predictions or heatmaps, on any route they can open;
adjudicators, researchers and admins do see the model's opinion on the consensus and image pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.files.storage import default_storage
from django.urls import reverse

from annotation.models import CellClass, LabelStatus
from annotation.services.labeling import annotation_submit, queue_next
from annotation.services.metadata_strip import metadata_strip
from core.roles import Role
from inference.ensembles import ensemble_cache_clear
from tests.factories.annotation import hold, image_make
from tests.inference.ensembles import version_factory
from tests.test_permissions_matrix import ROWS

pytestmark = pytest.mark.django_db

TOP = {"myeloblast": 0.6137, "lymphoblast": 0.2211, "monocyte": 0.0873}
# What would give the model away: the panel, its API, the score words, and this test's exact numbers.
MARKERS = (
    "model opinion",
    "model-opinion",
    "gradcam",
    "/api/inference/",
    "probabilit",
    "confidence",
    "61.4",
    "0.6137",
    "22.1 %",
)
# The API schema and its viewer document the inference endpoints (names, not any image's scores); logging out
# would end the walk.
SKIPPED = {"/api/schema/", "/api/docs/", "/accounts/logout/"}


@pytest.fixture
def version(make_version):
    yield version_factory(make_version)()
    ensemble_cache_clear()


@pytest.fixture
def scored(version, batch, predict, make_user):
    """An unlabeled cell and a cell in consensus (two blind labels that disagree), both with a stored prediction
    of the active model."""
    unlabeled = image_make(batch=batch)
    in_consensus = image_make(batch=batch)
    for code in ("neutrophil", "lymphocyte"):
        annotator = make_user(Role.ANNOTATOR)
        hold(image=in_consensus, annotator=annotator)
        annotation_submit(image_id=in_consensus.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))
    in_consensus.refresh_from_db()
    assert in_consensus.label_status == LabelStatus.CONSENSUS
    for image in (unlabeled, in_consensus):
        predict(version, image, TOP)
    return {"unlabeled": unlabeled, "consensus": in_consensus}


def _leaks(response) -> list[str]:
    text = response.content.decode(errors="replace").lower()
    return [marker for marker in MARKERS if marker.lower() in text]


def _stored_pixels(image) -> set[bytes]:
    # Annotators get the stored files with their metadata removed.
    stored = ((image.file, image.format), (image.thumbnail, "JPEG"))
    return {metadata_strip(data=default_storage.open(path).read(), image_format=kind)[0] for path, kind in stored}


def test_no_route_an_annotator_can_open_shows_the_model(scored, batch, annotator, client_for):
    client = client_for(annotator)  # a session, as the pages and their scripts use
    image = scored["unlabeled"]
    opened = 0
    for row in ROWS:
        if row.url in SKIPPED or row.expected["annotator"] in ("403", "login"):
            continue
        response = client.generic(row.method, row.concrete_url(image_id=image.id, batch_id=batch.id))
        if response.streaming:  # an image file: the stored pixels as imported, never an overlay
            assert b"".join(response.streaming_content) in _stored_pixels(image), row.url
        else:
            assert _leaks(response) == [], f"{row.method} {row.url}"
        opened += 1
    assert opened >= 10  # the label page, its API, the image files, home...

    # The real labeling flow on the scored cell: hold it, label it, list my labels.
    held = client.post(reverse("annotation_api:queue_next"))
    assert held.status_code == 200
    labeled = client.post(
        reverse("annotation_api:labels"),
        {"image": held.json()["image"], "cell_class": "monocyte"},
        content_type="application/json",
    )
    assert labeled.status_code == 201, labeled.content
    mine, page = client.get(reverse("annotation_api:labels")), client.get(reverse("annotation:label"))
    for response in (held, labeled, mine, page):
        assert _leaks(response) == []


@pytest.mark.parametrize("image_key", ["unlabeled", "consensus"])
def test_annotators_are_refused_the_opinion_and_heatmap(scored, image_key, annotator, client_for, api_client_for):
    image = scored[image_key]
    for client in (client_for(annotator), api_client_for(annotator)):
        for name in ("inference_api:image_opinion", "inference_api:image_gradcam"):
            response = client.get(reverse(name, kwargs={"image_id": image.id}))
            assert response.status_code == 403
            assert _leaks(response) == []


def test_a_colleague_with_a_second_role_sees_the_opinion_only_once_the_cell_is_final(
    scored, make_user, client_for, settings
):
    """An annotator who is also an adjudicator could still be handed an unlabeled cell, and could take their label
    back while the cell is open or within the undo grace period: no opinion until the cell is final and the grace
    period is over."""
    user = make_user(Role.ADJUDICATOR)
    user.groups.add(Group.objects.get(name=Role.ANNOTATOR.value))
    client = client_for(user)
    image = scored["unlabeled"]
    page = reverse("annotation:image_detail", kwargs={"image_id": image.id})
    opinion = reverse("inference_api:image_opinion", kwargs={"image_id": image.id})

    assert client.get(page).status_code == 200
    assert _leaks(client.get(page)) == []
    assert client.get(opinion).status_code == 403

    item = queue_next(annotator=user)
    assert item.image.id == image.id
    neutrophil = CellClass.objects.get(code="neutrophil")
    annotation_submit(image_id=item.image.id, annotator=user, cell_class=neutrophil)
    assert _leaks(client.get(page)) == []  # waiting for the second label: still open
    assert client.get(opinion).status_code == 403

    colleague = make_user(Role.ANNOTATOR)
    hold(image=image, annotator=colleague)
    annotation_submit(image_id=image.id, annotator=colleague, cell_class=neutrophil)
    assert _leaks(client.get(page)) == []  # final, but they may still undo: seeing it final would tell them
    assert client.get(opinion).status_code == 403

    settings.HEMALOOP_UNDO_GRACE_SECONDS = 0
    assert "Model opinion" in client.get(page).content.decode()
    assert client.get(opinion).json()["state"] == "ready"


def test_adjudicators_see_the_top3_on_the_image_page(scored, adjudicator, client_for):
    html = client_for(adjudicator).get(reverse("annotation:image_detail", kwargs={"image_id": scored["unlabeled"].id}))
    text = html.content.decode()
    assert "Model opinion" in text
    assert [name for name in ("Myeloblast", "Lymphoblast", "Monocyte") if f'opinion-class">{name}<' in text] == [
        "Myeloblast",
        "Lymphoblast",
        "Monocyte",
    ]
    assert text.index("Myeloblast</span>") < text.index("Lymphoblast</span>") < text.index("Monocyte</span>")
    assert "61.4 %" in text
    assert "22.1 %" in text
    assert "/api/inference/images/" in text  # the heatmap, loaded when toggled


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.ADMIN, Role.ADJUDICATOR])
def test_the_opinion_api_gives_top3_and_a_working_heatmap_url(scored, role, make_user, client_for):
    client = client_for(make_user(role))
    body = client.get(reverse("inference_api:image_opinion", kwargs={"image_id": scored["consensus"].id})).json()

    assert body["state"] == "ready"
    assert [score["code"] for score in body["top"]] == ["myeloblast", "lymphoblast", "monocyte"]
    assert body["source"] == "stored"
    heatmap = client.get(body["heatmap_url"])
    assert heatmap.status_code == 200
    assert heatmap["Content-Type"] == "image/png"
    assert heatmap.content.startswith(b"\x89PNG")


def test_the_consensus_page_carries_the_opinion_panel(scored, adjudicator, client_for):
    text = client_for(adjudicator).get(reverse("annotation:consensus")).content.decode()
    assert f'data-image-id="{scored["consensus"].id}"' in text
    assert "data-model-opinion" in text
    assert 'data-api-opinion="/api/inference/images/0/opinion/"' in text
    assert "<kbd>h</kbd> model heatmap" in text


def test_without_an_active_model_the_page_says_so(batch, adjudicator, client_for):
    image = image_make(batch=batch)
    text = client_for(adjudicator).get(reverse("annotation:image_detail", kwargs={"image_id": image.id})).content
    assert "No active model yet" in text.decode()

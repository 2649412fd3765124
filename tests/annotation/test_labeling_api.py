"""The labeling, consensus and agreement API, as annotators and adjudicators use it; blinding."""

from __future__ import annotations

import json

import pytest

from annotation.models import CellImage, LabelStatus
from core.roles import Role
from tests.factories.annotation import batch_make, image_make

SECRET_WORDS = ("myeloblast", "lymphoblast", "reference", "analyzer", "final", "consensus", "prediction")


@pytest.fixture
def image(admin_user):
    # The reference label and analyzer class must never reach an annotator.
    return image_make(
        batch=batch_make(created_by=admin_user), reference_label="myeloblast", analyzer_class="lymphoblast"
    )


def _next(client):
    response = client.post("/api/annotation/queue/next/")
    assert response.status_code == 200, response.content
    return response.json()


def test_annotator_flow_and_clear_errors(image, make_user, api_client_for):
    client = api_client_for(make_user(Role.ANNOTATOR))
    item = _next(client)
    assert set(item) == {"image", "image_url", "width", "height", "lease_expires_at"}
    assert client.get(item["image_url"]).status_code == 200

    bad = client.post("/api/annotation/labels/", {"image": item["image"], "cell_class": "blast"}, format="json")
    assert bad.status_code == 400
    assert "Unknown cell class" in json.dumps(bad.json())
    missing = client.post("/api/annotation/labels/", {"image": 999999, "cell_class": "monocyte"}, format="json")
    assert missing.status_code == 409
    # The refusal hands back the cell to label instead, as queue/next does.
    assert missing.json()["code"] == "not_held"
    assert {**missing.json()["next"], "lease_expires_at": None} == {**item, "lease_expires_at": None}
    ok = client.post(
        "/api/annotation/labels/",
        {"image": item["image"], "cell_class": "monocyte", "duration_ms": 2300},
        format="json",
    )
    assert ok.status_code == 201
    assert ok.json()["cell_class"] == "monocyte"
    again = client.post("/api/annotation/labels/", {"image": item["image"], "cell_class": "monocyte"}, format="json")
    assert again.status_code == 409
    assert again.json() == {
        "detail": "You can label only the cell the queue handed you, while you hold it; here is the next one.",
        "code": "not_held",
        "next": None,
    }
    assert client.post("/api/annotation/queue/next/").status_code == 204  # nothing else for this annotator
    assert client.get("/api/annotation/queue/progress/").json() == {"today": 1, "total": 1, "waiting": 0}


def test_a_third_label_gets_409(image, make_user, api_client_for):
    clients = [api_client_for(make_user(Role.ANNOTATOR)) for _ in range(3)]
    for client in clients[:2]:
        item = _next(client)
        assert (
            client.post(
                "/api/annotation/labels/", {"image": item["image"], "cell_class": "monocyte"}, format="json"
            ).status_code
            == 201
        )
    late = clients[2].post(
        "/api/annotation/labels/", {"image": image.public_id, "cell_class": "monocyte"}, format="json"
    )
    assert late.status_code == 409
    assert late.json()["code"] == "not_held"


def test_annotators_never_learn_a_colleagues_label(image, make_user, api_client_for):
    first, second = make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)
    a, b = api_client_for(first), api_client_for(second)
    _next(a)
    a.post("/api/annotation/labels/", {"image": image.public_id, "cell_class": "lymphocyte"}, format="json")
    # b sees the same image: nothing in any response b can reach tells what a said, or anything else.
    answers = [_next(b), b.get("/api/annotation/labels/").json(), b.get("/api/annotation/queue/progress/").json()]
    b.post("/api/annotation/labels/", {"image": image.public_id, "cell_class": "monocyte"}, format="json")
    answers.append(b.get("/api/annotation/labels/").json())
    text = json.dumps(answers).lower()
    assert "lymphocyte" not in text
    assert first.username not in text
    assert not any(word in text for word in SECRET_WORDS)
    for url in (
        f"/api/annotation/images/{image.id}/",
        f"/api/annotation/images/{image.id}/history/",
        "/api/annotation/consensus/",
        "/api/annotation/agreement/",
        "/api/annotation/agreement/heatmap.png",
        "/api/annotation/images/?reference_label=myeloblast",
        "/api/annotation/batches/",
    ):
        assert b.get(url).status_code == 403, url
    # b's own label list holds only b's label
    assert [row["cell_class"] for row in b.get("/api/annotation/labels/").json()["results"]] == ["monocyte"]


def test_consensus_resolve_race_and_reopen_through_the_api(image, make_user, api_client_for):
    for code in ("myeloblast", "lymphoblast"):
        client = api_client_for(make_user(Role.ANNOTATOR))
        _next(client)
        client.post("/api/annotation/labels/", {"image": image.public_id, "cell_class": code}, format="json")
    first = api_client_for(make_user(Role.ADJUDICATOR, username="dr_a"))
    second = api_client_for(make_user(Role.ADJUDICATOR))
    queue = first.get("/api/annotation/consensus/").json()
    assert queue["count"] == 1
    assert sorted(label["cell_class"] for label in queue["results"][0]["labels"]) == ["lymphoblast", "myeloblast"]
    assert queue["results"][0]["reopened"] is None  # a disagreement put it there
    resolved = first.post(
        f"/api/annotation/consensus/{image.id}/resolve/",
        {"cell_class": "myeloblast", "note": "Auer rod"},
        format="json",
    )
    assert resolved.status_code == 200
    assert resolved.json()["final_label"] == "myeloblast"
    late = second.post(f"/api/annotation/consensus/{image.id}/resolve/", {"cell_class": "lymphoblast"}, format="json")
    assert late.status_code == 409
    assert "dr_a" in late.json()["detail"]
    assert second.post(f"/api/annotation/images/{image.id}/reopen/", {}, format="json").status_code == 400
    reopened = second.post(f"/api/annotation/images/{image.id}/reopen/", {"reason": "MPO negative"}, format="json")
    assert reopened.status_code == 200
    assert reopened.json()["label_status"] == LabelStatus.CONSENSUS
    history = second.get(f"/api/annotation/images/{image.id}/history/").json()
    assert [e["kind"] for e in history] == ["label", "label", "disagreement", "adjudicated", "reopened"]
    assert history[3]["note"] == "Auer rod"
    assert history[3]["actor"] == "dr_a"
    assert history[4]["note"] == "MPO negative"
    assert history[4]["cell_class"] == "myeloblast"
    assert CellImage.objects.get(pk=image.pk).final_label is None
    # Back in the queue, the cell says who re-opened which final label and why, without the history.
    [item] = first.get("/api/annotation/consensus/").json()["results"]
    assert item["image"] == image.id
    assert len(item["labels"]) == 2
    assert {key: item["reopened"][key] for key in ("actor", "cell_class", "note")} == {
        "actor": history[4]["actor"],
        "cell_class": "myeloblast",
        "note": "MPO negative",
    }
    assert item["reopened"]["created_at"] == history[4]["created_at"]


def test_agreement_api_and_heatmap(image, make_user, api_client_for):
    for code in ("monocyte", "monocyte"):
        client = api_client_for(make_user(Role.ANNOTATOR))
        _next(client)
        client.post("/api/annotation/labels/", {"image": image.public_id, "cell_class": code}, format="json")
    researcher = api_client_for(make_user(Role.RESEARCHER))
    stats = researcher.get("/api/annotation/agreement/").json()
    assert stats["n_images"] == 1
    assert stats["observed_agreement"] == 1.0
    assert (
        researcher.get("/api/annotation/agreement/", {"date_from": "2000-01-01", "date_to": "2000-01-02"}).json()[
            "n_images"
        ]
        == 0
    )
    assert researcher.get("/api/annotation/agreement/", {"date_from": "yesterday"}).status_code == 400
    png = researcher.get("/api/annotation/agreement/heatmap.png")
    assert png.status_code == 200
    assert png["Content-Type"] == "image/png"
    assert png.content[:4] == b"\x89PNG"


def test_a_flagged_label_reaches_the_adjudicators_queue_and_they_resolve_it(image, make_user, api_client_for):
    annotators = [api_client_for(make_user(Role.ANNOTATOR)) for _ in range(2)]
    for client in annotators:
        _next(client)
        client.post("/api/annotation/labels/", {"image": image.public_id, "cell_class": "monocyte"}, format="json")
    assert CellImage.objects.get(pk=image.pk).label_status == LabelStatus.FINAL
    flagged = annotators[1].post("/api/annotation/labels/flag/", {"note": "Wrong key: a lymphocyte"}, format="json")
    assert flagged.status_code == 204
    for unknown in ("no-such-cell", image.id, image.sha256):  # a database id or a hash is no cell of theirs
        refused = annotators[1].post("/api/annotation/labels/flag/", {"image": unknown}, format="json")
        assert (refused.status_code, refused.json()["code"]) == (404, "nothing_to_flag")

    adjudicator = api_client_for(make_user(Role.ADJUDICATOR))
    queue = adjudicator.get("/api/annotation/consensus/").json()
    assert [item["image"] for item in queue["results"]] == [image.id]
    assert [label["flagged"] for label in queue["results"][0]["labels"]] == [False, True]
    history = adjudicator.get(f"/api/annotation/images/{image.id}/history/").json()
    assert (history[-1]["kind"], history[-1]["note"]) == ("flagged", "Wrong key: a lymphocyte")
    resolved = adjudicator.post(
        f"/api/annotation/consensus/{image.id}/resolve/", {"cell_class": "lymphocyte"}, format="json"
    )
    assert resolved.json()["final_label"] == "lymphocyte"

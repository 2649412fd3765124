"""The pages that combine floors, as each role sees them: the home page, the image page (history, re-open) and
the consensus page. Their model-opinion panels are tested in tests/inference/test_blinding.py."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from annotation.models import Annotation, Case, CellClass, CellImage, LabelEvent, LabelStatus
from annotation.services.consensus import consensus_resolve
from annotation.services.labeling import annotation_submit
from core.jobs import JobStatus
from core.roles import Role
from releases.services.versions import dataset_version_create
from tests.factories.annotation import batch_make, hold, image_make
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(admin_user):
    return batch_make(created_by=admin_user, source_name="di60-week12.zip")


@pytest.fixture
def case():
    return Case.objects.create(code="P-0042", diagnosis=Case.Diagnosis.AML)


@pytest.fixture
def annotators(make_user):
    return make_user(Role.ANNOTATOR, username="ann_alice"), make_user(Role.ANNOTATOR, username="ann_bob")


def _label(image: CellImage, annotator, code: str | None) -> Annotation:
    cell_class = CellClass.objects.get(code=code) if code else None
    hold(image=image, annotator=annotator)
    return annotation_submit(image_id=image.id, annotator=annotator, cell_class=cell_class, duration_ms=1500)


# --- home ----------------------------------------------------------------------------------------------


def test_home_tiles_follow_the_roles(client_for, admin_user, researcher, annotator, make_user, batch):
    image_make(batch=batch)
    admin_html = client_for(admin_user).get(reverse("home")).content.decode()
    assert reverse("annotation:batch_list") in admin_html
    assert reverse("annotation:image_list") in admin_html
    researcher_html = client_for(researcher).get(reverse("home")).content.decode()
    assert reverse("annotation:image_list") in researcher_html
    assert reverse("annotation:batch_list") not in researcher_html
    annotator_html = client_for(annotator).get(reverse("home")).content.decode()
    assert reverse("annotation:label") in annotator_html  # the "Start labeling" tile
    assert "1 cell waiting for your label" in annotator_html
    assert reverse("annotation:image_list") not in annotator_html
    assert "no role yet" in client_for(make_user(None)).get(reverse("home")).content.decode()


def test_home_shows_the_model_review_cases_and_datasets_to_those_who_may_see_them(
    client_for, admin_user, researcher, annotator, batch
):
    image_make(batch=batch, final_label="neutrophil")
    admin_html = client_for(admin_user).get(reverse("home")).content.decode()
    assert "No model version is active yet." in admin_html
    assert "No training run in progress." in admin_html
    assert "No dataset version yet." in admin_html
    assert "0</span> possible label errors" in admin_html
    assert reverse("cases:case_list") in admin_html

    dataset = dataset_version_create(created_by=admin_user)
    done = TrainingRun.objects.create(
        dataset_version=dataset, profile="smoke", config={}, requested_by=admin_user, status=JobStatus.SUCCEEDED
    )
    ModelVersion.objects.create(
        run=done,
        out_dir="models/none",
        config={},
        temperature=1.0,
        metrics={"ensemble": {"test": {"macro_f1": 0.7361}}},
        status=ModelVersion.Status.ACTIVE,
    )
    running = TrainingRun.objects.create(
        dataset_version=dataset, profile="smoke", config={}, requested_by=admin_user, status=JobStatus.RUNNING
    )
    researcher_html = client_for(researcher).get(reverse("home")).content.decode()
    assert "model version" in researcher_html
    assert "0.736" in researcher_html
    assert f"Training run #{running.pk} running" in researcher_html
    assert reverse("training:run_detail", args=[running.pk]) in researcher_html
    assert f"v{dataset.number}" in researcher_html

    annotator_html = client_for(annotator).get(reverse("home")).content.decode()
    for hidden in ("possible label error", "macro-F1", reverse("inference:review"), reverse("cases:case_list")):
        assert hidden not in annotator_html


def test_home_has_a_start_labeling_tile_with_the_annotators_progress(client_for, annotators, batch):
    alice, _ = annotators
    done = image_make(batch=batch)
    image_make(batch=batch)
    image_make(batch=batch)
    _label(done, alice, "neutrophil")
    html = client_for(alice).get(reverse("home")).content.decode()
    tile = html.split('class="tile hero"')[1].split("</a>")[0]
    assert "Start labeling" in tile
    assert "2 cells waiting for your label" in tile
    assert re.search(r"<dt>Today</dt><dd>1</dd>", tile)
    assert re.search(r"<dt>In total</dt><dd>1</dd>", tile)


# --- image page: metadata, history and re-open ----------------------------------------------------


def test_image_detail_shows_the_full_image_and_its_metadata(client_for, researcher, batch, case):
    image = image_make(
        batch=batch,
        case=case,
        reference_label="myelocyte",
        analyzer_class="metamyelocyte",
        original_name="slide7/cell_0001.png",
    )
    response = client_for(researcher).get(reverse("annotation:image_detail", args=[image.id]))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'src="/annotation/images/{image.id}/file"' in html
    assert image.sha256 in html
    assert "slide7/cell_0001.png" in html
    assert "Myelocyte" in html
    assert "Metamyelocyte" in html
    assert "Acute myeloid leukemia" in html
    # The batch page is admin-only, so researchers get no link to it.
    assert reverse("annotation:batch_detail", args=[batch.id]) not in html


def test_image_detail_of_a_missing_image_is_404(client_for, admin_user):
    assert client_for(admin_user).get(reverse("annotation:image_detail", args=[424242])).status_code == 404


@pytest.fixture
def final_by_agreement(batch, annotators):
    image = image_make(batch=batch)
    _label(image, annotators[0], "neutrophil")
    _label(image, annotators[1], "neutrophil")
    image.refresh_from_db()
    assert image.label_status == LabelStatus.FINAL
    return image


def test_image_detail_shows_history_and_live_labels_to_adjudicators(client_for, adjudicator, final_by_agreement):
    response = client_for(adjudicator).get(reverse("annotation:image_detail", args=[final_by_agreement.id]))
    html = response.content.decode()
    assert response.status_code == 200
    history = html.split('id="history"')[1].split("</table>")[0]
    assert history.count('<tr class="event-label">') == 2
    assert "Final by agreement" in history
    live = html.split('id="live-labels"')[1].split("</table>")[0]
    for shown in ("ann_alice", "ann_bob", "1.5 s"):
        assert shown in live
    assert 'action="' + reverse("annotation:image_reopen", args=[final_by_agreement.id]) in html


def test_reopen_form_appends_to_the_history_and_redirects(client_for, adjudicator, final_by_agreement):
    image = final_by_agreement
    before = list(LabelEvent.objects.filter(image=image).values_list("id", "kind", "note"))
    client = client_for(adjudicator)
    response = client.post(
        reverse("annotation:image_reopen", args=[image.id]), {"reason": "  Band or segmented? Needs a second look.  "}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("annotation:image_detail", args=[image.id])

    after = list(LabelEvent.objects.filter(image=image).values_list("id", "kind", "note"))
    assert after[: len(before)] == before  # nothing rewritten
    assert after[len(before) :] == [(after[-1][0], "reopened", "Band or segmented? Needs a second look.")]
    image.refresh_from_db()
    assert (image.label_status, image.final_label) == (LabelStatus.CONSENSUS, None)

    html = client.get(response["Location"]).content.decode()
    assert "Re-opened: the cell is back in the consensus queue." in html
    history = html.split('id="history"')[1].split("</table>")[0]
    assert "Re-opened" in history
    assert "Band or segmented? Needs a second look." in history
    assert "Final by agreement" in history
    assert "Re-open label" not in html  # not final any more: no form


def test_reopen_needs_a_reason_and_changes_nothing_without_one(client_for, adjudicator, final_by_agreement):
    events = LabelEvent.objects.filter(image=final_by_agreement).count()
    response = client_for(adjudicator).post(
        reverse("annotation:image_reopen", args=[final_by_agreement.id]), {"reason": "   "}
    )
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    final_by_agreement.refresh_from_db()
    assert final_by_agreement.label_status == LabelStatus.FINAL
    assert LabelEvent.objects.filter(image=final_by_agreement).count() == events


def test_reopen_of_a_cell_without_final_label_is_refused_with_a_message(client_for, adjudicator, batch):
    image = image_make(batch=batch)
    client = client_for(adjudicator)
    response = client.post(reverse("annotation:image_reopen", args=[image.id]), {"reason": "why not"}, follow=True)
    assert "Only a cell with a final label can be re-opened." in response.content.decode()
    assert not LabelEvent.objects.filter(image=image).exists()


def test_researchers_see_the_history_but_no_reopen_form(client_for, researcher, final_by_agreement):
    html = client_for(researcher).get(reverse("annotation:image_detail", args=[final_by_agreement.id])).content.decode()
    assert 'id="history"' in html
    assert "Re-open label" not in html


def test_unclassifiable_final_label_reads_as_such(client_for, adjudicator, annotators, batch):
    image = image_make(batch=batch)
    _label(image, annotators[0], None)
    _label(image, annotators[1], "basophil")
    consensus_resolve(image_id=image.id, adjudicator=adjudicator, cell_class=None, note="smudge cell")
    html = client_for(adjudicator).get(reverse("annotation:image_detail", args=[image.id])).content.decode()
    assert re.search(r"data-final-label>Unclassifiable <span class=\"muted\">\(adjudicated\)", html)
    assert "smudge cell" in html


# --- consensus page -------------------------------------------------------------------------------


def test_consensus_page_shows_both_labels_who_gave_them_and_the_waiting_count(
    client_for, adjudicator, annotators, batch
):
    alice, bob = annotators
    agreed = image_make(batch=batch)
    _label(agreed, alice, "monocyte")
    _label(agreed, bob, "monocyte")
    disputed = image_make(batch=batch)
    _label(disputed, alice, "myeloblast")
    _label(disputed, bob, "lymphoblast")
    later = image_make(batch=batch)
    _label(later, alice, None)
    _label(later, bob, "basophil")

    response = client_for(adjudicator).get(reverse("annotation:consensus"))
    html = response.content.decode()
    assert response.status_code == 200
    assert response.context["item"].image.id == disputed.id  # oldest disagreement first
    proposals = html.split("data-labels>")[1].split("</ol>")[0]
    assert re.search(
        r"Myeloblast</strong>\s*<span class=\"proposal-meta\">by <span class=\"proposal-who\">ann_alice", proposals
    )
    assert re.search(
        r"Lymphoblast</strong>\s*<span class=\"proposal-meta\">by <span class=\"proposal-who\">ann_bob", proposals
    )
    assert "Monocyte</strong>" not in proposals
    assert "<dd data-waiting>2</dd>" in html
    item = json.loads(re.search(r'id="consensus-item" type="application/json">(.*?)</script>', html).group(1))
    assert item["image"] == disputed.id
    assert [(label["annotator"], label["cell_class"]) for label in item["labels"]] == [
        ("ann_alice", "myeloblast"),
        ("ann_bob", "lymphoblast"),
    ]
    assert item["reopened"] is None


def test_consensus_page_says_why_a_reopened_cell_is_back(client_for, adjudicator, admin_user, annotators, batch):
    alice, bob = annotators
    image = image_make(batch=batch)
    _label(image, alice, "myelocyte")
    _label(image, bob, "myelocyte")
    response = client_for(admin_user).post(
        reverse("annotation:image_reopen", args=[image.id]), {"reason": "Granules look toxic, not myelocyte"}
    )
    assert response.status_code == 302
    html = client_for(adjudicator).get(reverse("annotation:consensus")).content.decode()
    note = html.split("data-reopened")[1].split("</div>")[0]
    assert "Re-opened</strong> by " + admin_user.username in note
    assert "was Myelocyte" in note
    assert "Granules look toxic, not myelocyte" in note


def test_the_consensus_page_and_the_api_give_a_reopened_cell_alike(
    client_for, api_client_for, adjudicator, admin_user, annotators, batch
):
    alice, bob = annotators
    image = image_make(batch=batch)
    _label(image, alice, "myelocyte")
    _label(image, bob, "myelocyte")
    client_for(admin_user).post(reverse("annotation:image_reopen", args=[image.id]), {"reason": "Toxic granules?"})

    html = client_for(adjudicator).get(reverse("annotation:consensus")).content.decode()
    embedded = json.loads(re.search(r'id="consensus-item" type="application/json">(.*?)</script>', html).group(1))
    [listed] = api_client_for(adjudicator).get(reverse("annotation_api:consensus_list")).json()["results"]
    # The page's script shows the first cell from the embedded item and the next ones from the API: one shape.
    assert embedded == listed
    assert (listed["reopened"]["actor"], listed["reopened"]["cell_class"], listed["reopened"]["note"]) == (
        admin_user.username,
        "myelocyte",
        "Toxic granules?",
    )


def test_consensus_page_when_the_queue_is_empty(client_for, adjudicator):
    html = client_for(adjudicator).get(reverse("annotation:consensus")).content.decode()
    assert "Consensus queue is empty" in html
    assert re.search(r'class="empty-state" data-empty>', html)  # shown, not hidden
    assert "<dd data-waiting>0</dd>" in html

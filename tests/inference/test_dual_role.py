"""Two roles, one person: an annotator who is also an adjudicator, researcher or admin sees nothing but the pixels
of a cell they may still label (or whose label of theirs is open) on every route, and the same answers whatever
the colleague, the reference, the analyzer or the model said; nobody resolves a disagreement they labeled."""

from __future__ import annotations

import hashlib
import re
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.models import Annotation, Case, CellClass, CellImage, LabelEvent, LabelStatus, Lease, Skip
from annotation.selectors.blinding import image_hidden_from, images_hidden_from, may_still_label
from annotation.services.labeling import annotation_submit, queue_skip
from core.roles import Role
from inference.ensembles import ensemble_cache_clear
from inference.models import Prediction
from tests.factories.annotation import hold, image_make
from tests.inference.ensembles import version_factory

pytestmark = pytest.mark.django_db

HIDDEN_TOP = {"myeloblast": 0.6137, "lymphoblast": 0.2211}
# What would give a hidden cell away on its page: the reference and analyzer class, the colleague and the history,
# the model, the uploaded name.
MARKERS = (
    "myeloblast",
    "colleague_a",
    "sent to consensus",
    "reference label",
    "analyzer",
    "61.4",
    "0.6137",
    "model opinion",
    "cell_0",
)


@pytest.fixture(params=[Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN], ids=lambda role: f"annotator+{role.value}")
def dual(request, make_user):
    user = make_user(request.param, username=f"dual_{request.param.value}")
    user.groups.add(Group.objects.get(name=Role.ANNOTATOR.value))
    return user


@pytest.fixture
def version(make_version):
    yield version_factory(make_version)()
    ensemble_cache_clear()


def _label(image: CellImage, annotator, code: str) -> None:
    hold(image=image, annotator=annotator)
    annotation_submit(image_id=image.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))


@pytest.fixture
def world(batch, version, predict, dual, make_user):
    """Cells of one case, each scored by the active model. Hidden from `dual`: `open` (a colleague's label, dual
    may still label it), `waiting` (dual's label, waiting for a second) and `mine` (dual and a colleague disagree).
    Visible: `final` (two colleagues agreed; the model confidently says otherwise) and `theirs` (two colleagues
    disagree)."""
    case = Case.objects.create(code="DUAL-1")
    colleague_a = make_user(Role.ANNOTATOR, username="colleague_a")
    colleague_b = make_user(Role.ANNOTATOR, username="colleague_b")

    def cell(code: str) -> CellImage:
        return image_make(batch=batch, case=case, reference_label=code, analyzer_class=code)

    cells = SimpleNamespace(
        open=cell("myeloblast"),
        waiting=cell("myeloblast"),
        mine=cell("myeloblast"),
        final=cell("lymphocyte"),
        theirs=cell("monocyte"),
    )
    _label(cells.open, colleague_a, "myeloblast")
    _label(cells.waiting, dual, "neutrophil")
    _label(cells.mine, colleague_a, "myeloblast")
    _label(cells.mine, dual, "neutrophil")
    _label(cells.final, colleague_a, "lymphocyte")
    _label(cells.final, colleague_b, "lymphocyte")
    _label(cells.theirs, colleague_a, "monocyte")
    _label(cells.theirs, colleague_b, "basophil")
    for image in (cells.open, cells.waiting, cells.mine):
        predict(version, image, HIDDEN_TOP)
    predict(version, cells.final, {"basophil": 0.95})
    predict(version, cells.theirs, {"monocyte": 0.8})
    for name in vars(cells):
        getattr(cells, name).refresh_from_db()
    assert (cells.final.label_status, cells.mine.label_status) == (LabelStatus.FINAL, LabelStatus.CONSENSUS)
    return SimpleNamespace(cells=cells, case=case, version=version, colleague_a=colleague_a, colleague_b=colleague_b)


def _rewrite_what_is_hidden(world) -> None:
    """The counterfactual: every fact about the hidden cells that the dual-role user must not know, changed."""
    other = CellClass.objects.get(code="lymphoblast")
    hidden = [world.cells.open, world.cells.waiting, world.cells.mine]
    CellImage.objects.filter(pk__in=[c.pk for c in hidden]).update(reference_label=other, analyzer_class=other)
    for image in (world.cells.open, world.cells.mine):
        Annotation.objects.filter(image=image, annotator=world.colleague_a).update(cell_class=other)
        LabelEvent.objects.filter(image=image, actor=world.colleague_a).update(cell_class=other)
    Prediction.objects.filter(image__in=hidden).update(
        predicted_class=other, probabilities=[0.9 if i == other.order else 0.01 for i in range(12)], confidence=0.9
    )


def _normalised(response) -> tuple[int, str]:
    if getattr(response, "streaming", False):  # a file: its bytes, by hash
        return response.status_code, hashlib.sha256(b"".join(response.streaming_content)).hexdigest()
    text = response.content.decode(errors="replace")
    # CSRF tokens change per request; nothing else on these answers may differ.
    return response.status_code, re.sub(r"[A-Za-z0-9]{64}", "TOKEN", text)


def _cell_answers(client, api, image: CellImage) -> dict[str, tuple[int, str]]:
    """Every per-cell route, page and API, as the user gets it."""
    kwargs = {"image_id": image.id}
    return {
        "page": _normalised(client.get(reverse("annotation:image_detail", kwargs=kwargs))),
        "file": _normalised(client.get(reverse("annotation:image_file", kwargs=kwargs))),
        "thumbnail": _normalised(client.get(reverse("annotation:image_thumbnail", kwargs=kwargs))),
        "file_api": _normalised(api.get(reverse("annotation_api:image_file", kwargs=kwargs))),
        "page_reopen": _normalised(client.post(reverse("annotation:image_reopen", kwargs=kwargs), {"reason": ""})),
        "history": _normalised(api.get(reverse("annotation_api:image_history", kwargs=kwargs))),
        "detail": _normalised(api.get(reverse("annotation_api:image_detail", kwargs=kwargs))),
        "opinion": _normalised(api.get(reverse("inference_api:image_opinion", kwargs=kwargs))),
        "heatmap": _normalised(api.get(reverse("inference_api:image_gradcam", kwargs=kwargs))),
        "reopen": _normalised(api.post(reverse("annotation_api:image_reopen", kwargs=kwargs), {"reason": "x"})),
        "resolve": _normalised(
            api.post(reverse("annotation_api:consensus_resolve", kwargs=kwargs), {"cell_class": "neutrophil"})
        ),
    }


def _upload(image: CellImage) -> SimpleUploadedFile:
    with default_storage.open(image.file, "rb") as handle:
        return SimpleUploadedFile("cell.png", handle.read(), content_type="image/png")


def _overview_answers(client, api, world) -> dict[str, tuple[int, str]]:
    """Every route that lists or counts cells, and the predict API on the hidden cells' own files."""
    case_id = world.case.id
    return {
        "home": _normalised(client.get("/")),
        "consensus_page": _normalised(client.get(reverse("annotation:consensus"))),
        "consensus_api": _normalised(api.get(reverse("annotation_api:consensus_list"))),
        "image_list": _normalised(client.get(reverse("annotation:image_list"))),
        "image_list_api": _normalised(api.get(reverse("annotation_api:image_list"))),
        "agreement_api": _normalised(api.get(reverse("annotation_api:agreement"))),
        "case_list": _normalised(client.get(reverse("cases:case_list"))),
        "case_page": _normalised(client.get(reverse("cases:case_detail", kwargs={"case_id": case_id}))),
        "case_json": _normalised(client.get(reverse("cases:case_summary_json", kwargs={"case_id": case_id}))),
        "review": _normalised(client.get(reverse("inference:review"))),
        "admin_images": _normalised(client.get("/admin/annotation/cellimage/")),
        "admin_predictions": _normalised(client.get("/admin/inference/prediction/")),
        **{
            f"predict_{name}": _normalised(
                api.post(
                    reverse("inference_api:predict"),
                    {"images": [_upload(getattr(world.cells, name))]},
                    format="multipart",
                )
            )
            for name in ("open", "waiting", "mine")
        },
    }


def test_what_is_hidden_changes_no_answer_on_any_route(world, dual, client_for, api_client_for):
    client, api = client_for(dual), api_client_for(dual)
    hidden = [world.cells.open, world.cells.waiting, world.cells.mine]

    before = [_cell_answers(client, api, image) for image in hidden], _overview_answers(client, api, world)
    _rewrite_what_is_hidden(world)
    after = [_cell_answers(client, api, image) for image in hidden], _overview_answers(client, api, world)

    assert before == after


def test_a_hidden_cells_page_shows_nothing_of_it_and_reads_the_same_for_every_hidden_cell(
    world, dual, client_for, api_client_for
):
    """Not even the pixels: by database id they would tie the id (and the import report's file name) to the cell
    the labeling queue shows under its public id. Its files answer as an unknown id does."""
    client, api = client_for(dual), api_client_for(dual)
    unknown = _cell_answers(client, api, SimpleNamespace(id=999999))
    pages = []
    for image in (world.cells.open, world.cells.waiting, world.cells.mine):
        answers = _cell_answers(client, api, image)
        status, text = answers["page"]
        assert status == 200
        assert "<img" not in text
        assert image.public_id not in text
        assert [marker for marker in MARKERS if marker in text.lower()] == []
        for route in ("file", "thumbnail", "file_api"):
            assert answers[route] == unknown[route], route
            assert answers[route][0] == 404, route
        pages.append(text.replace(f"/{image.id}/", "/ID/"))
        for route in ("history", "opinion", "heatmap", "page_reopen"):
            assert answers[route][0] == 403, route
        assert '"code":"cell_hidden"' in answers["history"][1]
        assert answers["opinion"] == answers["heatmap"] == answers["history"]
        assert answers["detail"][0] == 403  # by role for an adjudicator, as a hidden cell for the others
    assert pages[0] == pages[1] == pages[2]


def test_a_cell_made_final_by_their_label_stays_hidden_while_they_may_undo_it(
    world, dual, client_for, api_client_for, settings
):
    """Seeing that a cell turned final would tell the second labeler they agreed, and undo could act on it."""
    _label(world.cells.open, dual, "myeloblast")  # agrees with colleague_a: final by agreement
    world.cells.open.refresh_from_db()
    assert world.cells.open.label_status == LabelStatus.FINAL
    client, api = client_for(dual), api_client_for(dual)
    agreed, disagreed = _cell_answers(client, api, world.cells.open), _cell_answers(client, api, world.cells.mine)
    assert agreed["history"] == disagreed["history"]
    assert agreed["history"][0] == 403

    settings.HEMALOOP_UNDO_GRACE_SECONDS = 0  # the grace period is over: the final cell is theirs to see
    assert _cell_answers(client, api, world.cells.open)["history"][0] == 200


def test_a_final_cell_they_never_labeled_shows_everything(world, dual, client_for, api_client_for):
    client, api = client_for(dual), api_client_for(dual)
    image = world.cells.final
    page = client.get(reverse("annotation:image_detail", kwargs={"image_id": image.id})).content.decode()
    assert client.get(reverse("annotation:image_file", kwargs={"image_id": image.id})).status_code == 200
    assert "Lymphocyte" in page
    assert "colleague_a" in page
    assert "Model opinion" in page
    history = api.get(reverse("annotation_api:image_history", kwargs={"image_id": image.id}))
    assert [event["actor"] for event in history.json()][:2] == ["colleague_a", "colleague_b"]
    opinion = api.get(reverse("inference_api:image_opinion", kwargs={"image_id": image.id})).json()
    assert (opinion["state"], opinion["top"][0]["code"]) == ("ready", "basophil")


def test_the_case_summary_counts_only_cells_not_hidden(world, dual, client_for):
    summary = client_for(dual).get(reverse("cases:case_summary_json", kwargs={"case_id": world.case.id})).json()
    assert (summary["images"], summary["labeled"], summary["unlabeled"]) == (5, 1, 4)
    assert summary["by_final_label"]["counts"]["lymphocyte"] == 1
    # The model scored all five; the three hidden cells' predictions (myeloblast) are not counted.
    by_model = {code: n for code, n in summary["by_model"]["counts"].items() if n}
    assert by_model == {"basophil": 1, "monocyte": 1}


def test_the_lists_leave_out_hidden_cells_and_keep_the_rest(world, dual, client_for, api_client_for):
    client, api = client_for(dual), api_client_for(dual)
    review = client.get(reverse("inference:review")).content.decode()
    assert reverse("annotation:image_detail", kwargs={"image_id": world.cells.final.id}) in review
    if dual.groups.filter(name__in=[Role.ADJUDICATOR.value, Role.ADMIN.value]).exists():
        listed = [item["image"] for item in api.get(reverse("annotation_api:consensus_list")).json()["results"]]
        assert listed == [world.cells.theirs.id]
    if dual.groups.filter(name__in=[Role.RESEARCHER.value, Role.ADMIN.value]).exists():
        listed = {row["id"] for row in api.get(reverse("annotation_api:image_list")).json()["results"]}
        assert world.cells.final.id in listed
        assert listed.isdisjoint({world.cells.open.id, world.cells.waiting.id, world.cells.mine.id})
    if dual.is_staff:  # the Django admin
        images = client.get("/admin/annotation/cellimage/").content.decode()
        assert world.cells.final.sha256[:12] in images
        assert all(c.sha256[:12] not in images for c in (world.cells.open, world.cells.waiting, world.cells.mine))
        predictions = client.get("/admin/inference/prediction/").content.decode()
        assert f"/admin/inference/prediction/{Prediction.objects.get(image=world.cells.final).pk}/" in predictions
        assert all(
            f"/admin/inference/prediction/{Prediction.objects.get(image=c).pk}/" not in predictions
            for c in (world.cells.open, world.cells.waiting, world.cells.mine)
        )
    pairs = api.get(reverse("annotation_api:agreement")).json()["pairs"]
    assert [pair["annotators"] for pair in pairs] == [["colleague_a", "colleague_b"]]


@pytest.fixture
def adjudicating_annotator(make_user):
    user = make_user(Role.ADJUDICATOR, username="dual_adjudicator")
    user.groups.add(Group.objects.get(name=Role.ANNOTATOR.value))
    return user


@pytest.fixture
def their_disagreement(batch, adjudicating_annotator, make_user):
    image = image_make(batch=batch)
    _label(image, make_user(Role.ANNOTATOR), "myeloblast")
    _label(image, adjudicating_annotator, "lymphoblast")
    return image


def _resolve(api, image: CellImage):
    url = reverse("annotation_api:consensus_resolve", kwargs={"image_id": image.id})
    return api.post(url, {"cell_class": "myeloblast"})


def test_nobody_resolves_a_disagreement_they_labeled(their_disagreement, adjudicating_annotator, api_client_for):
    response = _resolve(api_client_for(adjudicating_annotator), their_disagreement)
    assert (response.status_code, response.json()["code"]) == (403, "own_label")
    their_disagreement.refresh_from_db()
    assert their_disagreement.label_status == LabelStatus.CONSENSUS


def test_another_adjudicator_resolves_it(their_disagreement, adjudicator, api_client_for):
    assert _resolve(api_client_for(adjudicator), their_disagreement).status_code == 200


def test_one_person_labs_may_allow_self_adjudication(
    their_disagreement, adjudicating_annotator, api_client_for, settings
):
    settings.HEMALOOP_ALLOW_SELF_ADJUDICATION = True
    api = api_client_for(adjudicating_annotator)
    listed = [item["image"] for item in api.get(reverse("annotation_api:consensus_list")).json()["results"]]
    assert listed == [their_disagreement.id]
    response = _resolve(api, their_disagreement)
    assert (response.status_code, response.json()["final_label"]) == (200, "myeloblast")


def test_the_predict_api_refuses_a_hidden_cells_file_like_any_refused_file(world, dual, api_client_for):
    api = api_client_for(dual)
    url = reverse("inference_api:predict")
    if dual.groups.filter(name=Role.ADJUDICATOR.value).exists():
        # The predict API is for researchers and admins: refused by role, the same for hidden and visible cells.
        answers = [
            api.post(url, {"images": [_upload(c)]}, format="multipart") for c in (world.cells.open, world.cells.final)
        ]
        assert [a.status_code for a in answers] == [403, 403]
        assert answers[0].json() == answers[1].json()
        return
    refused = api.post(url, {"images": [_upload(world.cells.open)]}, format="multipart")
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_image"  # the code of a file that is not an image, too
    assert refused.json()["detail"].startswith("cell.png: ")
    scored = api.post(url, {"images": [_upload(world.cells.final)]}, format="multipart")
    assert scored.status_code == 200
    assert scored.json()["results"][0]["predicted_class"]


def test_hidden_is_the_queues_eligibility_and_a_skip_or_colleagues_leases_do_not_lift_it(
    batch, adjudicating_annotator, make_user
):
    """'May still label' ignores what passes by the hour: a skip cools down, a colleague's lease expires."""
    user = adjudicating_annotator
    skipped, leased, labeled = image_make(batch=batch), image_make(batch=batch), image_make(batch=batch)
    queue_skip(image_id=skipped.id, annotator=user)
    for _ in range(2):
        Lease.objects.create(image=leased, annotator=make_user(Role.ANNOTATOR), expires_at="2999-01-01T00:00Z")
    _label(labeled, user, "monocyte")
    assert Skip.objects.filter(image=skipped, annotator=user).exists()

    assert may_still_label(user=user, image=skipped)
    assert may_still_label(user=user, image=leased)
    assert not may_still_label(user=user, image=labeled)
    assert all(image_hidden_from(user=user, image=image) for image in (skipped, leased, labeled))
    assert set(images_hidden_from(user=user)) == {skipped, leased, labeled}
    # A user without the annotator role may not label anything; only their own open labels stay hidden.
    adjudicator = make_user(Role.ADJUDICATOR)
    assert not any(image_hidden_from(user=adjudicator, image=image) for image in (skipped, leased, labeled))

"""Case summaries against hand-computed counts: differentials by final label and by the active model, blast
fraction, myeloblast : lymphoblast ratio, the 20% flag at its exact boundary, the list's sort order, and the
pages (annotators refused: the summary shows final labels and predictions)."""

from __future__ import annotations

import pytest

from annotation.models import Case, CellImage, LabelStatus
from cases.selectors import blast_flag, case_list, case_summary
from core.roles import Role
from tests.factories.annotation import image_make
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


def _seed(batch, case: Case, labels: dict[str, int], *, unclassifiable: int = 0, unlabeled: int = 0) -> list:
    images = [image_make(batch=batch, case=case, final_label=code) for code, n in labels.items() for _ in range(n)]
    for _ in range(unclassifiable):
        image = image_make(batch=batch, case=case)
        CellImage.objects.filter(pk=image.pk).update(
            label_status=LabelStatus.FINAL, final_label=None, final_method="adjudicated"
        )
    images += [image_make(batch=batch, case=case) for _ in range(unlabeled)]
    return images


@pytest.fixture
def aml_case(batch, make_version, predict):
    """Final labels: 3 myeloblasts, 1 lymphoblast, 4 neutrophils, 2 lymphocytes (10 white cells), 2 unclassifiable,
    3 unlabeled. The active model scores 5 of them: 2 myeloblasts, 3 neutrophils (and an unrelated candidate
    version says lymphoblast everywhere, which must not count)."""
    case = Case.objects.create(code="AML-001", diagnosis=Case.Diagnosis.AML)
    images = _seed(
        batch,
        case,
        {"myeloblast": 3, "lymphoblast": 1, "neutrophil": 4, "lymphocyte": 2},
        unclassifiable=2,
        unlabeled=3,
    )
    active, candidate = make_version(ModelVersion.Status.ACTIVE), make_version()
    for image, code in zip(
        images[:5], ["myeloblast", "myeloblast", "neutrophil", "neutrophil", "neutrophil"], strict=True
    ):
        predict(active, image, {code: 0.9})
    for image in images:
        predict(candidate, image, {"lymphoblast": 0.9})
    return case


def test_case_summary_matches_hand_computed_counts(aml_case, researcher):
    summary = case_summary(case=aml_case, viewer=researcher)
    label, model = summary.by_label, summary.by_model

    assert (summary.images, summary.labeled, summary.unlabeled) == (15, 12, 3)
    counts = {row.code: row.count for row in label.rows}
    assert counts["myeloblast"] == 3
    assert counts["lymphoblast"] == 1
    assert counts["neutrophil"] == 4
    assert counts["lymphocyte"] == 2
    assert sum(counts.values()) == 10
    assert label.white_cells == 10  # the 2 unclassifiable are shown apart, not in the denominator
    assert label.unclassifiable == 2
    percent = {row.code: row.percent for row in label.rows}
    assert percent["myeloblast"] == pytest.approx(30.0)
    assert percent["neutrophil"] == pytest.approx(40.0)
    assert percent["monocyte"] == 0.0
    assert label.blast_fraction == pytest.approx(0.4)
    assert label.myeloblast_lymphoblast_ratio == pytest.approx(3.0)
    assert label.ratio_display == "3.00 : 1"
    assert label.flag

    assert model.white_cells == 5  # only the active version's predictions
    assert {row.code: row.count for row in model.rows if row.count} == {"myeloblast": 2, "neutrophil": 3}
    assert model.blast_fraction == pytest.approx(0.4)
    assert model.myeloblast_lymphoblast_ratio == float("inf")  # myeloblasts, no lymphoblasts
    assert model.ratio_display.startswith("∞")


def test_the_flag_starts_at_exactly_twenty_percent(batch, researcher):
    exactly = Case.objects.create(code="B-20")
    _seed(batch, exactly, {"lymphoblast": 1, "neutrophil": 4})  # 1/5 = 20.0%
    below = Case.objects.create(code="C-17")
    _seed(batch, below, {"lymphoblast": 1, "neutrophil": 5})  # 1/6 = 16.7%

    assert case_summary(case=exactly, viewer=researcher).by_label.flag
    assert case_summary(case=exactly, viewer=researcher).by_label.ratio_display == "0.00 : 1"
    assert not case_summary(case=below, viewer=researcher).by_label.flag
    assert blast_flag(blasts=20, white_cells=100)
    assert not blast_flag(blasts=1999, white_cells=10_000)
    assert not blast_flag(blasts=0, white_cells=0)


def test_a_case_without_blasts_or_labels_has_no_ratio_and_no_model_without_an_active_version(batch, researcher):
    case = Case.objects.create(code="N-1")
    _seed(batch, case, {"neutrophil": 2}, unlabeled=1)

    summary = case_summary(case=case, viewer=researcher)

    assert summary.by_model is None
    assert summary.by_label.blast_fraction == 0.0
    assert summary.by_label.myeloblast_lymphoblast_ratio is None
    assert summary.by_label.ratio_display == "—"
    empty = case_summary(case=Case.objects.create(code="E-0"), viewer=researcher)
    assert empty.by_label.blast_fraction is None
    assert all(row.percent is None for row in empty.by_label.rows)


@pytest.fixture
def four_cases(batch, aml_case):
    """AML-001: 40% blasts; B-20: 20%; C-17: 16.7%; D-none: no final label (no blast fraction)."""
    _seed(batch, Case.objects.create(code="B-20"), {"lymphoblast": 1, "neutrophil": 4})
    _seed(batch, Case.objects.create(code="C-17"), {"lymphoblast": 1, "neutrophil": 5})
    _seed(batch, Case.objects.create(code="D-none"), {}, unlabeled=2)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-blasts", ["AML-001", "B-20", "C-17", "D-none"]),
        ("blasts", ["C-17", "B-20", "AML-001", "D-none"]),  # a case without white cells sorts last both ways
        ("code", ["AML-001", "B-20", "C-17", "D-none"]),
        ("-code", ["D-none", "C-17", "B-20", "AML-001"]),
    ],
)
def test_case_list_sorts_by_blast_fraction_and_name(four_cases, sort, expected, researcher):
    assert [case.code for case in case_list(sort=sort, viewer=researcher)] == expected


def test_case_list_counts_match_the_summary(four_cases, researcher):
    rows = {case.code: case for case in case_list(viewer=researcher)}
    aml = rows["AML-001"]
    assert (aml.n_images, aml.labeled, aml.unlabeled, aml.white_cells, aml.blasts) == (15, 12, 3, 10, 4)
    assert (aml.model_scored, aml.model_blasts) == (5, 2)
    assert aml.blast_fraction == pytest.approx(0.4)
    assert rows["D-none"].blast_fraction is None
    assert rows["D-none"].model_blast_fraction is None


def test_case_pages_show_counts_flag_and_notice(four_cases, make_user, client_for):
    client = client_for(make_user(Role.RESEARCHER))

    listing = client.get("/cases/?sort=-blasts").content.decode()
    assert listing.index("AML-001") < listing.index("B-20") < listing.index("C-17") < listing.index("D-none")
    assert "Decision support, not a diagnosis" in listing
    aml = Case.objects.get(code="AML-001")
    page = client.get(f"/cases/{aml.pk}/").content.decode()
    assert 'id="blast-flag"' in page
    assert "Decision support, not a diagnosis" in page
    assert "40.0%" in page
    assert "3.00 : 1" in page
    assert page.count('class="bar-label"') == 12
    assert page.count('class="bar-model"') == 12
    data = client.get(f"/cases/{aml.pk}/summary.json").json()
    assert data["by_final_label"]["counts"]["myeloblast"] == 3
    assert data["by_final_label"]["white_cells"] == 10
    assert data["by_final_label"]["unclassifiable"] == 2
    assert data["by_model"]["myeloblast_lymphoblast_ratio"] == "inf"
    unflagged = client.get(f"/cases/{Case.objects.get(code='C-17').pk}/").content.decode()
    assert 'id="blast-flag"' not in unflagged


def test_annotators_see_no_link_to_case_summaries(annotator, client_for):
    assert "/cases/" not in client_for(annotator).get("/").content.decode()

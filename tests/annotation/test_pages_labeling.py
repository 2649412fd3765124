"""The labeling and agreement pages and the navigation as each role sees them (the consensus and image pages
are in tests/dashboard/test_pages.py)."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import resolve, reverse
from sklearn.metrics import cohen_kappa_score

from annotation.models import Annotation, CellClass, CellImage
from annotation.services.labeling import annotation_submit
from annotation.templatetags.annotation_ui import kappa_band
from core.roles import Role
from tests.factories.annotation import batch_make, hold, image_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(admin_user):
    return batch_make(created_by=admin_user, source_name="di60-week12.zip")


@pytest.fixture
def annotators(make_user):
    return make_user(Role.ANNOTATOR, username="ann_alice"), make_user(Role.ANNOTATOR, username="ann_bob")


def _label(image: CellImage, annotator, code: str | None) -> Annotation:
    cell_class = CellClass.objects.get(code=code) if code else None
    hold(image=image, annotator=annotator)
    return annotation_submit(image_id=image.id, annotator=annotator, cell_class=cell_class, duration_ms=1500)


def _without_csrf(html: str) -> str:
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)
    return re.sub(r'name="csrf-token" content="[^"]+"', "", html)


# --- access and navigation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "label", "consensus", "agreement"),
    [
        (Role.ANNOTATOR, 200, 403, 403),
        (Role.ADJUDICATOR, 403, 200, 200),
        (Role.RESEARCHER, 403, 403, 200),
        (Role.ADMIN, 403, 200, 200),
    ],
)
def test_pages_answer_each_role_and_the_nav_offers_only_what_it_may_open(
    make_user, client_for, role, label, consensus, agreement
):
    client = client_for(make_user(role))
    expected = {"label": label, "consensus": consensus, "agreement": agreement}
    for name, status in expected.items():
        assert client.get(reverse(f"annotation:{name}")).status_code == status, name
    nav = client.get(reverse("home")).content.decode().split('<nav aria-label="Main">')[1].split("</nav>")[0]
    for name, status in expected.items():
        assert (f'href="{reverse(f"annotation:{name}")}"' in nav) == (status == 200), name


def test_nav_badge_counts_the_cells_waiting_for_an_adjudicator(client_for, adjudicator, annotators, batch):
    for _ in range(2):
        image = image_make(batch=batch)
        _label(image, annotators[0], "myeloblast")
        _label(image, annotators[1], "lymphoblast")
    html = client_for(adjudicator).get(reverse("home")).content.decode()
    assert re.search(r"Consensus <span class=\"nav-badge\"[^>]*>2</span>", html)
    assert "2</span> cells waiting for an adjudicator" in html


# --- the labeling page is blind ------------------------------------------------------------------------


def test_labeling_page_shows_classes_with_hotkeys_grouped_and_the_progress(client_for, annotators, batch):
    alice, _ = annotators
    image_make(batch=batch)
    response = client_for(alice).get(reverse("annotation:label"))
    html = response.content.decode()
    assert response.status_code == 200
    normal, immature = html.split(">Normal</h2>")[1].split(">Immature</h2>")
    for cls in CellClass.objects.all():
        button = f'data-code="{cls.code}" data-hotkey="{cls.hotkey}"'
        assert button in (normal if cls.group == "normal" else immature).split(">Other</h2>")[0], cls.code
    assert 'data-code="unclassifiable" data-hotkey="u"' in html
    assert 'data-action="skip"' in html
    assert 'data-action="undo"' in html
    assert '<dd data-progress="waiting">1</dd>' in html
    taxonomy = json.loads(re.search(r'id="taxonomy-data" type="application/json">(.*?)</script>', html).group(1))
    assert [c["hotkey"] for c in taxonomy] == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "-", "="]


def test_labeling_page_reveals_nothing_about_the_cells_labels(client_for, annotators, make_user, batch):
    """Whatever the reference label, the analyzer class, a colleague's label or the final label of the
    queued cell are, the page an annotator gets is byte-for-byte the same: nothing of them is in it."""
    alice, bob = annotators
    image = image_make(
        batch=batch,
        reference_label="promyelocyte",
        analyzer_class="basophil",
        original_name="promyelocyte/P-0042_cell_17.png",
    )
    _label(image, bob, "variant_lymphocyte")  # a colleague's label, live
    decided = image_make(batch=batch, reference_label="eosinophil", final_label="eosinophil")
    client = client_for(alice)
    first = client.get(reverse("annotation:label")).content.decode()

    CellImage.objects.filter(pk=image.pk).update(
        reference_label=CellClass.objects.get(code="myelocyte"),
        analyzer_class=CellClass.objects.get(code="monocyte"),
        original_name="myelocyte/P-0042_cell_17.png",
    )
    Annotation.objects.filter(image=image).update(cell_class=CellClass.objects.get(code="lymphoblast"))
    CellImage.objects.filter(pk=decided.pk).update(final_label=CellClass.objects.get(code="basophil"))
    second = client.get(reverse("annotation:label")).content.decode()

    assert _without_csrf(first) == _without_csrf(second)
    lowered = first.lower()
    for leak in ("reference", "analyzer", "prediction", "final label", "p-0042", bob.username, image.sha256[:12]):
        assert leak not in lowered, leak
    # What the page's script receives for the cell: pixels' address and size, and the hold; nothing else.
    cell = client.post(reverse("annotation_api:queue_next"))
    assert set(cell.json()) == {"image", "image_url", "width", "height", "lease_expires_at"}
    assert resolve(cell.json()["image_url"]).kwargs == {"public_id": image.public_id}
    assert cell.json()["image"] == image.public_id


# --- agreement page ----------------------------------------------------------------------------------


LABELS_A = [
    "neutrophil",
    "neutrophil",
    "lymphocyte",
    "monocyte",
    "myeloblast",
    "myeloblast",
    "lymphoblast",
    "eosinophil",
    "basophil",
    "neutrophil",
    "monocyte",
    None,
]
LABELS_B = [
    "neutrophil",
    "band_neutrophil",
    "lymphocyte",
    "lymphocyte",
    "myeloblast",
    "lymphoblast",
    "lymphoblast",
    "eosinophil",
    "basophil",
    "neutrophil",
    "monocyte",
    None,
]


def _seed_pairs(batch, alice, bob, labels_a, labels_b):
    for code_a, code_b in zip(labels_a, labels_b, strict=True):
        image = image_make(batch=batch)
        _label(image, alice, code_a)
        _label(image, bob, code_b)


def test_agreement_page_shows_kappa_as_sklearn_computes_it(client_for, researcher, annotators, batch):
    _seed_pairs(batch, *annotators, LABELS_A, LABELS_B)
    expected = cohen_kappa_score([c or "u" for c in LABELS_A], [c or "u" for c in LABELS_B])
    observed = sum(a == b for a, b in zip(LABELS_A, LABELS_B, strict=True)) / len(LABELS_A)

    html = client_for(researcher).get(reverse("annotation:agreement")).content.decode()
    assert re.search(r'data-kpi="images">12<', html)
    assert re.search(rf'data-kpi="kappa">{expected:.3f}<', html)
    assert re.search(rf'data-kpi="observed">{observed * 100:.1f} %<', html)
    assert f'<span class="band {kappa_band(expected)[1]}">{kappa_band(expected)[0]}</span> agreement' in html
    pairs = html.split('id="pairs"')[1].split("</table>")[0]
    assert re.search(
        rf"ann_alice <span class=\"muted\">×</span> ann_bob</td>\s*<td class=\"num\">12</td>\s*"
        rf"<td class=\"num\">{expected:.3f}</td>",
        pairs,
    )
    per_class = html.split('id="classes"')[1].split("</table>")[0]
    # Myeloblast: chosen by someone on 2 images, by both on 1 -> 50 % agreement.
    assert re.search(r"<td>Myeloblast</td>\s*<td class=\"num\">2</td>.*?50\.0 %", per_class, re.S)
    annotators_table = html.split('id="annotators"')[1].split("</table>")[0]
    assert re.search(r"<td>ann_alice</td>\s*<td class=\"num\">12</td>\s*<td class=\"num\">3</td>", annotators_table)
    assert 'src="/api/annotation/agreement/heatmap.png"' in html


def test_agreement_page_filters_by_batch_and_dates(client_for, adjudicator, admin_user, annotators, batch):
    _seed_pairs(batch, *annotators, LABELS_A, LABELS_B)
    other = batch_make(created_by=admin_user, source_name="second.zip")
    _seed_pairs(other, *annotators, ["myeloblast", "monocyte", "basophil"], ["myeloblast", "monocyte", "eosinophil"])
    client = client_for(adjudicator)
    url = reverse("annotation:agreement")

    html = client.get(url, {"batch": other.id}).content.decode()
    expected = cohen_kappa_score(["myeloblast", "monocyte", "basophil"], ["myeloblast", "monocyte", "eosinophil"])
    assert re.search(r'data-kpi="images">3<', html)
    assert re.search(rf'data-kpi="kappa">{expected:.3f}<', html)
    assert f'src="/api/annotation/agreement/heatmap.png?batch={other.id}"' in html
    assert re.search(r'data-kpi="images">15<', client.get(url).content.decode())
    future = client.get(url, {"date_from": "2999-01-01"}).content.decode()
    assert re.search(r'data-kpi="images">0<', future)
    assert "No cell has two live labels for these filters yet" in future
    backwards = client.get(url, {"date_from": "2026-02-01", "date_to": "2026-01-01"}).content.decode()
    assert "The start date is after the end date." in backwards
    assert 'data-kpi="images"' not in backwards


@pytest.mark.parametrize(
    ("kappa", "band"),
    [
        (-0.05, "Poor"),
        (0.0, "Slight"),
        (0.2, "Slight"),
        (0.21, "Fair"),
        (0.4, "Fair"),
        (0.55, "Moderate"),
        (0.61, "Substantial"),
        (0.8, "Substantial"),
        (0.81, "Almost perfect"),
        (1.0, "Almost perfect"),
        (None, "Not defined"),
    ],
)
def test_kappa_interpretation_follows_landis_and_koch(kappa, band):
    assert kappa_band(kappa)[0] == band

"""In a real browser: two annotators label the same cells blind with hotkeys, an adjudicator resolves the
disagreement with a hotkey, the agreement page counts the result; undo, refusals and screenshots."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from playwright.sync_api import expect
from sklearn.metrics import cohen_kappa_score

from annotation.models import Annotation, CellClass, CellImage, LabelEvent, LabelStatus
from annotation.services.consensus import consensus_resolve, label_reopen
from annotation.services.labeling import annotation_submit
from core.roles import Role
from tests.factories.annotation import batch_make, hold, image_make
from tests.helpers import PASSWORD

pytestmark = pytest.mark.usefixtures("no_script_errors")


@pytest.fixture
def people(make_user):
    return {
        "admin": make_user(Role.ADMIN, username="dr_admin", password=PASSWORD),
        "alice": make_user(Role.ANNOTATOR, username="dr_alice", password=PASSWORD),
        "bob": make_user(Role.ANNOTATOR, username="dr_bob", password=PASSWORD),
        "adj": make_user(Role.ADJUDICATOR, username="dr_adjudicator", password=PASSWORD),
    }


@pytest.fixture
def cells(people):
    batch = batch_make(created_by=people["admin"], source_name="di60-week12.zip")
    # Reference and analyzer classes are deliberately set: the labeling page must never show them.
    return [
        image_make(batch=batch, reference_label="myeloblast", analyzer_class="monocyte"),
        image_make(batch=batch, reference_label="neutrophil", analyzer_class="band_neutrophil"),
        image_make(batch=batch, reference_label="monocyte", analyzer_class="lymphocyte"),
    ]


def _log_out(page):
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def _shown_cell(page, cell: CellImage):
    """Waits until the labeling (or consensus) page shows this cell, decoded and ready for a key. The labeling page
    knows the cell by its public id only; the consensus page (adjudicators) by its database id."""
    expect(page.locator(f'[data-cell="{cell.public_id}"], [data-image-id="{cell.id}"]')).to_have_count(1)
    # The consensus page renders the first cell's id itself: keys work once its module says it is ready.
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    expect(page.locator("[data-viewer-image]")).to_be_visible()


def _label_with_hotkeys(page, live_server, cells, keys: list[str], names: list[str]):
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Label").click()
    expect(page).to_have_url(f"{live_server.url}/annotation/label/")
    for cell, key, name in zip(cells, keys, names, strict=True):
        _shown_cell(page, cell)
        page.keyboard.press(key)
        expect(page.locator(".toast").last).to_have_text(f"Labeled: {name} — Undo with ⌫")
    expect(page.get_by_role("heading", name="Nothing left to label — thank you")).to_be_visible()
    expect(page.locator('[data-progress="today"]')).to_have_text("3")
    expect(page.locator('[data-progress="waiting"]')).to_have_text("0")


def _codes(image: CellImage, annotator) -> str | None:
    label = Annotation.objects.get(image=image, annotator=annotator, undone_at__isnull=True)
    return label.cell_class.code if label.cell_class else None


def test_two_annotators_label_blind_and_an_adjudicator_resolves_the_disagreement(
    page, live_server, log_in, people, cells, screenshot
):
    alice, bob, adj = people["alice"], people["bob"], people["adj"]

    log_in(alice)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Label").click()
    _shown_cell(page, cells[0])
    page.wait_for_load_state("networkidle")
    screenshot("label-page")
    html = page.content()
    for hidden in ("Reference", "Analyzer", "dr_bob"):
        assert hidden not in html
    _label_with_hotkeys(page, live_server, cells, ["8", "1", "5"], ["Myeloblast", "Neutrophil", "Monocyte"])
    screenshot("label-page-empty")
    _log_out(page)

    log_in(bob)
    _label_with_hotkeys(page, live_server, cells, ["8", "6", "5"], ["Myeloblast", "Lymphocyte", "Monocyte"])
    _log_out(page)
    assert [_codes(c, alice) for c in cells] == ["myeloblast", "neutrophil", "monocyte"]
    assert [_codes(c, bob) for c in cells] == ["myeloblast", "lymphocyte", "monocyte"]
    assert all(a.duration_ms is not None and a.duration_ms >= 0 for a in Annotation.objects.all())

    log_in(adj)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.locator("[data-consensus-badge]")).to_have_text("1")
    nav.get_by_role("link", name="Consensus").click()
    _shown_cell(page, cells[1])
    proposals = page.locator(".proposal")
    expect(proposals).to_have_count(2)
    expect(proposals.nth(0)).to_contain_text("Neutrophil")
    expect(proposals.nth(0)).to_contain_text("dr_alice")
    expect(proposals.nth(1)).to_contain_text("Lymphocyte")
    expect(proposals.nth(1)).to_contain_text("dr_bob")
    expect(page.locator(".class-btn.proposed")).to_have_count(2)
    page.keyboard.press("6")
    expect(page.locator('.class-btn[data-code="lymphocyte"]')).to_have_class(re.compile(r"\bchosen\b"))
    page.keyboard.press("n")
    page.keyboard.type("Clumped chromatin, scant cytoplasm")
    screenshot("consensus-page")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Consensus queue is empty")).to_be_visible()
    expect(page.locator("[data-waiting]")).to_have_text("0")
    screenshot("consensus-empty")

    finals = {
        c.id: (c.label_status, c.final_label.code if c.final_label else None, c.final_method)
        for c in CellImage.objects.filter(pk__in=[c.id for c in cells]).select_related("final_label")
    }
    assert finals == {
        cells[0].id: (LabelStatus.FINAL, "myeloblast", "agreement"),
        cells[1].id: (LabelStatus.FINAL, "lymphocyte", "adjudicated"),
        cells[2].id: (LabelStatus.FINAL, "monocyte", "agreement"),
    }
    decision = LabelEvent.objects.get(image=cells[1], kind=LabelEvent.Kind.ADJUDICATED)
    assert (decision.actor, decision.note) == (adj, "Clumped chromatin, scant cytoplasm")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Agreement").click()
    expect(page.locator('[data-kpi="images"]')).to_have_text("3")
    expected = cohen_kappa_score(["myeloblast", "neutrophil", "monocyte"], ["myeloblast", "lymphocyte", "monocyte"])
    expect(page.locator('[data-kpi="kappa"]')).to_have_text(f"{expected:.3f}")
    page.wait_for_load_state("networkidle")
    assert page.eval_on_selector("img.heatmap", "img => img.complete && img.naturalWidth") > 0


def test_undo_with_the_hotkey_brings_the_cell_back(page, live_server, log_in, people, cells):
    alice = people["alice"]
    log_in(alice)
    page.goto(f"{live_server.url}/annotation/label/")
    _shown_cell(page, cells[0])
    page.keyboard.press("9")
    expect(page.locator(".toast").last).to_have_text("Labeled: Lymphoblast — Undo with ⌫")
    _shown_cell(page, cells[1])
    expect(page.locator('[data-progress="total"]')).to_have_text("1")

    page.keyboard.press("Backspace")
    _shown_cell(page, cells[0])
    expect(page.locator(".toast").last).to_contain_text("Undone: label Lymphoblast taken back")
    expect(page.locator('[data-progress="total"]')).to_have_text("0")
    undone = Annotation.objects.get(image=cells[0], annotator=alice)
    assert undone.undone_at is not None
    assert CellImage.objects.get(pk=cells[0].pk).label_count == 0

    page.keyboard.press("3")
    expect(page.locator(".toast").last).to_have_text("Labeled: Eosinophil — Undo with ⌫")
    # Back to the cell that was on screen before the undo.
    _shown_cell(page, cells[1])
    assert _codes(cells[0], alice) == "eosinophil"

    page.keyboard.press("Control+z")
    _shown_cell(page, cells[0])
    assert not Annotation.objects.filter(image=cells[0], annotator=alice, undone_at__isnull=True).exists()
    assert Annotation.objects.filter(image=cells[0], annotator=alice).count() == 2  # history kept


def test_a_refused_label_is_announced_and_the_next_cell_follows(page, live_server, log_in, people, cells):
    log_in(people["alice"])
    page.goto(f"{live_server.url}/annotation/label/")
    _shown_cell(page, cells[0])
    # Meanwhile the cell got a final label elsewhere (e.g. a trusted import): it no longer needs Alice's.
    CellImage.objects.filter(pk=cells[0].pk).update(
        label_status=LabelStatus.FINAL, final_label=CellClass.objects.get(code="myeloblast")
    )
    page.keyboard.press("u")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Your label (Unclassifiable) was not saved.")
    expect(alert).to_contain_text("This cell no longer needs a label")
    _shown_cell(page, cells[1])
    assert not Annotation.objects.exists()

    page.keyboard.press("s")  # skip: the cell goes back to colleagues, the next one follows
    expect(page.locator(".toast").last).to_contain_text("Skipped")
    _shown_cell(page, cells[2])


def test_after_the_grace_period_undo_says_why_not_and_f_flags_the_label(
    page, live_server, log_in, people, cells, settings
):
    settings.HEMALOOP_UNDO_GRACE_SECONDS = 2  # the page counts it down from its own clock: no sleep in the test
    alice = people["alice"]
    log_in(alice)
    page.goto(f"{live_server.url}/annotation/label/")
    _shown_cell(page, cells[0])
    undo = page.locator('[data-action="undo"]')
    expect(undo).to_have_attribute("aria-disabled", "true")  # nothing labeled yet
    page.keyboard.press("9")
    _shown_cell(page, cells[1])
    expect(undo).to_have_attribute("aria-disabled", "false")
    expect(undo).to_have_attribute("aria-disabled", "true", timeout=10_000)  # the grace period ran out
    expect(page.locator("[data-undo-hint]")).to_contain_text("Too late to undo")

    page.keyboard.press("Backspace")
    expect(page.locator("[data-alert]")).to_contain_text("Too late to undo your last label. Press f to flag it")
    _shown_cell(page, cells[1])
    assert Annotation.objects.get(image=cells[0], annotator=alice).undone_at is None

    page.keyboard.press("f")
    expect(page.locator(".toast").last).to_have_text("Flagged: an adjudicator will look at your last label again")
    assert Annotation.objects.get(image=cells[0], annotator=alice).flagged_at is not None
    assert LabelEvent.objects.filter(image=cells[0], actor=alice, kind=LabelEvent.Kind.FLAGGED).exists()


def test_adjudicator_who_comes_second_is_told_who_was_first(page, live_server, log_in, people, cells, make_user):
    alice, bob, adj = people["alice"], people["bob"], people["adj"]
    rival = make_user(Role.ADJUDICATOR, username="dr_rival", password=PASSWORD)
    for cell, (a, b) in zip(cells[:2], [("myeloblast", "lymphoblast"), ("monocyte", "lymphocyte")], strict=True):
        for annotator, code in ((alice, a), (bob, b)):
            hold(image=cell, annotator=annotator)
            annotation_submit(image_id=cell.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))
    log_in(adj)
    page.goto(f"{live_server.url}/annotation/consensus/")
    _shown_cell(page, cells[0])
    expect(page.locator("[data-waiting]")).to_have_text("2")
    consensus_resolve(image_id=cells[0].id, adjudicator=rival, cell_class=CellClass.objects.get(code="myeloblast"))

    page.keyboard.press("9")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Your decision (Lymphoblast) was not saved.")
    expect(alert).to_contain_text("resolved by dr_rival")
    _shown_cell(page, cells[1])
    expect(page.locator("[data-waiting]")).to_have_text("1")
    assert CellImage.objects.get(pk=cells[0].pk).final_label.code == "myeloblast"


def test_the_next_cell_says_why_it_was_reopened(page, live_server, log_in, people, cells):
    alice, bob, adj = people["alice"], people["bob"], people["adj"]
    for cell, (a, b) in zip(cells[:2], [("myeloblast", "lymphoblast"), ("monocyte", "monocyte")], strict=True):
        for annotator, code in ((alice, a), (bob, b)):
            hold(image=cell, annotator=annotator)
            annotation_submit(image_id=cell.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))
    label_reopen(image_id=cells[1].id, actor=people["admin"], reason="Nucleus folded: look again")
    log_in(adj)
    page.goto(f"{live_server.url}/annotation/consensus/")
    _shown_cell(page, cells[0])
    note = page.locator("[data-reopened]")
    expect(note).to_be_hidden()  # a disagreement, not a re-opening, put the first cell here

    page.keyboard.press("8")
    page.keyboard.press("Enter")
    # The next cell comes from the consensus API, which says itself why the cell is back.
    _shown_cell(page, cells[1])
    expect(note).to_be_visible()
    expect(note).to_contain_text("Re-opened by dr_admin")
    expect(note).to_contain_text("was Monocyte")
    expect(note.locator("q")).to_have_text("Nucleus folded: look again")


def test_viewer_zooms_with_keys_and_wheel_and_resets(page, live_server, log_in, people, cells):
    log_in(people["alice"])
    page.goto(f"{live_server.url}/annotation/label/")
    _shown_cell(page, cells[0])
    image = page.locator("[data-viewer-image]")
    fitted = image.bounding_box()["width"]
    page.keyboard.press("+")
    page.keyboard.press("+")
    assert image.bounding_box()["width"] == pytest.approx(fitted * 1.25 * 1.25, rel=0.02)
    page.keyboard.press("Shift+Minus")
    assert image.bounding_box()["width"] == pytest.approx(fitted * 1.25, rel=0.02)
    page.keyboard.press("r")
    assert image.bounding_box()["width"] == pytest.approx(fitted, rel=0.02)
    viewer = page.locator("[data-viewer]")
    viewer.hover()
    page.mouse.wheel(0, -400)
    assert image.bounding_box()["width"] > fitted * 1.5
    viewer.dblclick()
    assert image.bounding_box()["width"] == pytest.approx(fitted, rel=0.02)
    assert not Annotation.objects.exists()  # none of this labeled anything


# --- the pages with real cells (PBC sample in demo/) and a realistic label history ----------------------------

DEMO = Path(settings.BASE_DIR) / "demo" / "pbc-sample"
# What experts plausibly confuse each class with.
LOOK_ALIKES = {
    "neutrophil": "band_neutrophil",
    "band_neutrophil": "neutrophil",
    "eosinophil": "neutrophil",
    "basophil": "eosinophil",
    "monocyte": "lymphocyte",
    "lymphocyte": "variant_lymphocyte",
    "myelocyte": "metamyelocyte",
    "metamyelocyte": "band_neutrophil",
}


def _real_cell(*, batch, path: Path) -> CellImage:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    name = default_storage.save(f"images/{sha[:2]}/{sha}.jpg", ContentFile(data))
    with PILImage.open(path) as picture:
        width, height = picture.size
    return CellImage.objects.create(
        sha256=sha,
        file=name,
        thumbnail="",
        format="JPEG",
        width=width,
        height=height,
        size_bytes=len(data),
        original_name=f"{path.parent.name}/{path.name}",
        batch=batch,
        reference_label=CellClass.objects.get(code=path.parent.name),
    )


def test_pages_with_real_cells_and_a_realistic_label_history(page, live_server, log_in, people, make_user, screenshot):
    rng = random.Random(7)
    carol = make_user(Role.ANNOTATOR, username="dr_carol", password=PASSWORD)
    dana = make_user(Role.ANNOTATOR, username="dr_dana", password=PASSWORD)
    researcher = make_user(Role.RESEARCHER, username="dr_research", password=PASSWORD)
    week1 = batch_make(created_by=people["admin"], source_name="di60-week01.zip")
    week2 = batch_make(created_by=people["admin"], source_name="di60-week02.zip")
    annotators = [people["alice"], people["bob"], carol]
    firsts, seconds, first_week2, second_week2 = [], [], [], []
    for index, code in enumerate(sorted(LOOK_ALIKES) * 5):
        path = sorted((DEMO / code).glob("*.jpg"))[index // len(LOOK_ALIKES)]
        cell = _real_cell(batch=week1 if index % 3 else week2, path=path)
        pair = rng.sample(annotators, 2)
        given = [code if rng.random() < 0.82 else LOOK_ALIKES[code] for _ in pair]
        for annotator, label in zip(pair, given, strict=True):
            hold(image=cell, annotator=annotator)
            annotation_submit(
                image_id=cell.id,
                annotator=annotator,
                cell_class=CellClass.objects.get(code=label),
                duration_ms=rng.randint(900, 6000),
            )
        firsts.append(given[0])
        seconds.append(given[1])
        if cell.batch_id == week2.id:
            first_week2.append(given[0])
            second_week2.append(given[1])
    fresh = _real_cell(batch=week2, path=sorted((DEMO / "monocyte").glob("*.jpg"))[-1])

    log_in(researcher)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Agreement").click()
    expect(page.locator('[data-kpi="images"]')).to_have_text("40")
    expect(page.locator('[data-kpi="kappa"]')).to_have_text(f"{cohen_kappa_score(firsts, seconds):.3f}")
    expect(page.locator("#pairs tbody tr")).to_have_count(3)
    page.wait_for_load_state("networkidle")
    assert page.eval_on_selector("img.heatmap", "img => img.complete && img.naturalWidth") == 800
    screenshot("agreement-page")
    page.get_by_label("Import batch").select_option(str(week2.id))
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator('[data-kpi="images"]')).to_have_text(str(len(first_week2)))
    expect(page.locator('[data-kpi="kappa"]')).to_have_text(f"{cohen_kappa_score(first_week2, second_week2):.3f}")
    assert f"batch={week2.id}" in page.get_attribute("img.heatmap", "src")
    _log_out(page)

    log_in(dana)
    expect(page.locator(".tile.hero")).to_contain_text("1 cell waiting for your label")
    screenshot("home-annotator")
    page.get_by_role("link", name="Start labeling").click()
    _shown_cell(page, CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS).order_by("id").first())
    page.wait_for_load_state("networkidle")
    assert page.eval_on_selector("[data-viewer-image]", "img => img.naturalWidth") in (360, 366)
    assert "monocyte/" not in page.content()  # the file name spells the class; it never reaches the page
    screenshot("label-page-real-cell")
    _log_out(page)

    log_in(people["adj"])
    screenshot("home-adjudicator")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Consensus").click()
    first_disputed = CellImage.objects.filter(label_status=LabelStatus.CONSENSUS).order_by("id").first()
    _shown_cell(page, first_disputed)
    page.keyboard.press("1")
    page.wait_for_load_state("networkidle")
    screenshot("consensus-page-real-cell")
    page.keyboard.press("n")
    page.keyboard.type("Segmented nucleus, three lobes")
    page.keyboard.press("Enter")
    expect(page.locator(".toast").last).to_have_text("Resolved: Neutrophil")
    page.goto(f"{live_server.url}/annotation/images/{first_disputed.id}/")
    page.get_by_label("Reason for re-opening").fill("Lobes hard to count at this focus; second look")
    page.get_by_role("button", name="Re-open label").click()
    expect(page.locator(".messages")).to_contain_text("Re-opened")
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(5)  # label, label, disagreement, adjudicated, re-opened
    expect(history.last).to_contain_text("Lobes hard to count at this focus; second look")
    assert fresh.id != first_disputed.id
    screenshot("image-detail-history")

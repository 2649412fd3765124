"""The similar cells in a real browser, from the real embedding index (bundled EfficientNet-Lite0 on demo PBC cells):
an adjudicator sees them beside each disputed cell on the consensus page, refreshed for the next cell after a
hotkey decision, and beside a final cell on its image page; an annotator labeling a cell never gets them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from annotation.models import CellClass, CellImage, LabelStatus
from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process
from annotation.services.labeling import annotation_submit
from core.roles import Role
from inference.ensembles import ensemble_cache_clear
from inference.models import Embedding
from inference.services.neighbours import SIMILAR_CELLS, image_similar_cells, similar_cells_cache_clear
from tests.factories.annotation import hold
from tests.helpers import DEMO_DIR, PASSWORD

pytestmark = pytest.mark.usefixtures("no_script_errors")

FINAL_NAMES = {"Eosinophil", "Lymphocyte", "Neutrophil"}  # tests.helpers.DEMO_CLASSES, which labeled_demo imports
SIMILARITY = re.compile(r"^-?[01]\.\d{3}$")


@pytest.fixture
def index_on(settings, media):
    """The index built by every import, at 64 px as in tests/inference/test_similar_cells.py: only the order of
    neighbours matters here."""
    settings.HEMALOOP_INDEX_AUTO = True
    settings.HEMALOOP_INDEX_IMAGE_SIZE = 64
    settings.HEMALOOP_INDEX_SHARD_SIZE = 64
    settings.HEMALOOP_HEAD_REFRESH_EVERY = 0
    similar_cells_cache_clear()
    yield settings
    similar_cells_cache_clear()
    ensemble_cache_clear()


@pytest.fixture
def adjudicator(make_user):
    return make_user(Role.ADJUDICATOR, username="dr_adjudicator", password=PASSWORD)


def _import_unlabeled(admin_user, source: Path) -> None:
    batch = import_batch_create(
        created_by=admin_user, source=source, source_name=source.name, case_from_folder=True, enqueue=False
    )
    import_batch_process(batch=batch)


@pytest.fixture
def cells(index_on, admin_user, labeled_demo, tmp_path):
    """36 final demo cells of DEMO_CLASSES, and two unlabeled cells of a class none of them has: a basophil and a
    copy of it with other bytes (rescaled, re-encoded), each the other's nearest neighbour by far. All embedded."""
    labeled_demo()
    source = tmp_path / "unlabeled"
    (source / "case-b").mkdir(parents=True)
    original = sorted((DEMO_DIR / "basophil").glob("*.jpg"))[0]
    shutil.copyfile(original, source / "case-b" / "basophil.jpg")
    image = Image.open(original).convert("RGB")
    w, h = image.size
    image.resize((round(w * 0.9), round(h * 0.9)), Image.BICUBIC).save(source / "case-b" / "copy.jpg", quality=90)
    _import_unlabeled(admin_user, source)
    basophil = CellImage.objects.get(original_name="basophil.jpg")
    copy = CellImage.objects.get(original_name="copy.jpg")
    assert Embedding.objects.filter(image__in=[basophil, copy]).count() == 2  # the import's embedding pass ran
    return {"basophil": basophil, "copy": copy}


@pytest.fixture
def disputed(cells, make_user) -> list[CellImage]:
    """The basophil and its copy in consensus, in the queue's order (by id; the import does not say which file comes
    first): two annotators labeled each differently."""
    annotators = [make_user(Role.ANNOTATOR) for _ in range(2)]
    queue = sorted(cells.values(), key=lambda cell: cell.id)
    for cell in queue:
        for annotator, code in zip(annotators, ("neutrophil", "lymphocyte"), strict=True):
            hold(image=cell, annotator=annotator)
            annotation_submit(image_id=cell.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))
        cell.refresh_from_db()
        assert cell.label_status == LabelStatus.CONSENSUS
    return queue


def _panel_cells(page) -> list[dict]:
    """What the panel shows, cell by cell, once every thumbnail has loaded."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-similar-list] img')].every((i) => i.complete && i.naturalWidth)"
    )
    return page.locator("[data-similar-list] li").evaluate_all(
        """items => items.map((li) => ({
            id: Number(li.dataset.similarId),
            name: li.querySelector('.similar-class').textContent,
            similarity: li.querySelector('.similar-sim').textContent,
            alt: li.querySelector('img').alt,
        }))"""
    )


def _final_ids() -> set[int]:
    return set(CellImage.objects.filter(label_status=LabelStatus.FINAL).values_list("id", flat=True))


def test_adjudicator_sees_similar_final_cells_beside_each_disputed_cell_and_on_the_image_page(
    page, live_server, log_in, adjudicator, disputed, screenshot
):
    first, second = disputed  # the basophil and its copy, either way round
    key = CellClass.objects.get(code="basophil").hotkey
    log_in(adjudicator)
    with page.expect_response(re.compile(rf"/api/inference/images/{first.id}/similar/$")):
        page.goto(f"{live_server.url}/annotation/consensus/")
    expect(page.locator("[data-image-id]")).to_have_attribute("data-image-id", str(first.id))
    expect(page.locator("html")).to_have_attribute("data-ready", "true")  # the first cell takes keys

    panel = page.locator("[data-similar-cells]")
    expect(panel.get_by_role("heading")).to_have_text("Similar cells (final labels)")
    expect(panel).to_have_attribute("data-state", "ready")
    expect(panel.locator("[data-similar-list] li")).to_have_count(SIMILAR_CELLS)
    first_list = _panel_cells(page)
    # Only cells with a final label: the second cell, the first's nearest neighbour, is still in consensus.
    assert {cell["id"] for cell in first_list} <= _final_ids()
    assert second.id not in {cell["id"] for cell in first_list}
    labels = dict(CellImage.objects.values_list("id", "final_label__name"))
    for cell in first_list:
        assert cell["name"] in FINAL_NAMES
        assert cell["name"] == labels[cell["id"]]
        assert cell["alt"] == f"Cell labeled {cell['name']}"
        assert SIMILARITY.match(cell["similarity"]), cell
    similarities = [float(cell["similarity"]) for cell in first_list]
    assert similarities == sorted(similarities, reverse=True)
    expect(panel.locator("a").first).to_have_attribute("href", f"/annotation/images/{first_list[0]['id']}/")
    screenshot("consensus-similar-cells")

    # Decide the first cell with its class key: the second follows, and its panel is its own, looked up again, with
    # the first cell, just decided, on top (nearest by far) under the class the adjudicator gave it.
    page.keyboard.press(key)
    expect(page.locator('.class-btn[data-code="basophil"]')).to_have_class(re.compile(r"\bchosen\b"))
    with page.expect_response(re.compile(rf"/api/inference/images/{second.id}/similar/$")):
        page.keyboard.press("Enter")
    expect(page.locator("[data-image-id]")).to_have_attribute("data-image-id", str(second.id))
    top = panel.locator("[data-similar-list] li").first
    expect(top).to_have_attribute("data-similar-id", str(first.id))
    expect(top.locator(".similar-class")).to_have_text("Basophil")
    expect(panel.locator("[data-similar-list] li")).to_have_count(SIMILAR_CELLS)
    second_list = _panel_cells(page)
    assert float(second_list[0]["similarity"]) > float(second_list[1]["similarity"])
    assert float(second_list[0]["similarity"]) > similarities[0]  # a copy is closer than any other cell
    assert [cell["id"] for cell in second_list] != [cell["id"] for cell in first_list]
    assert {cell["id"] for cell in second_list} <= _final_ids()

    page.keyboard.press(key)  # the second cell takes keys: the page set its data-image-id once it did
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Consensus queue is empty")).to_be_visible()
    expect(page.locator("[data-similar-slot]")).to_be_hidden()

    # The image page of the first cell, final now, renders its neighbours itself: the second, final too, on top.
    page.goto(f"{live_server.url}/annotation/images/{first.id}/")
    panel = page.locator("[data-similar-cells]")
    expect(panel).to_have_attribute("data-state", "ready")
    expect(panel.locator("[data-similar-list] li")).to_have_count(SIMILAR_CELLS)
    detail_list = _panel_cells(page)
    assert detail_list[0]["id"] == second.id
    assert detail_list[0]["name"] == "Basophil"
    assert detail_list[0]["similarity"] == second_list[0]["similarity"]  # cosine similarity is symmetric
    assert all(SIMILARITY.match(cell["similarity"]) for cell in detail_list)
    screenshot("image-detail-similar-cells")
    panel.locator("li").first.get_by_role("link").click()
    expect(page).to_have_url(f"{live_server.url}/annotation/images/{second.id}/")
    expect(page.locator("[data-similar-list] li").first).to_have_attribute("data-similar-id", str(first.id))


def test_annotator_labeling_a_cell_never_gets_similar_cells(page, live_server, log_in, cells, adjudicator, make_user):
    # The index has neighbours to show for these cells (to an adjudicator).
    for cell in cells.values():
        assert len(image_similar_cells(image=cell, viewer=adjudicator).cells) == SIMILAR_CELLS
    annotator = make_user(Role.ANNOTATOR, username="dr_annotator", password=PASSWORD)
    similar_requests: list[str] = []
    page.on("request", lambda request: "/similar/" in request.url and similar_requests.append(request.url))
    log_in(annotator)
    page.goto(f"{live_server.url}/annotation/label/")
    shown = ", ".join(f'[data-cell="{cell.public_id}"]' for cell in cells.values())
    expect(page.locator(shown)).to_have_count(1)
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    expect(page.locator("[data-viewer-image]")).to_be_visible()
    expect(page.locator("[data-similar-cells]")).to_have_count(0)
    expect(page.get_by_text("Similar cells")).to_have_count(0)
    assert similar_requests == []

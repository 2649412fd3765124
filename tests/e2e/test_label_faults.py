"""In a real browser, the labeling pages under faults: a cell whose stored file is gone says so and can be
skipped (and admins see it listed), and a key pressed before the page's first cell is on screen is kept."""

from __future__ import annotations

import re

import pytest
from django.core.files.storage import default_storage
from playwright.sync_api import expect

from annotation.models import Annotation, CellClass, CellImage
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
    return [image_make(batch=batch, original_name=f"cell_{n}.png") for n in range(2)]


def _shown_cell(page, cell: CellImage):
    expect(page.locator("#label-app")).to_have_attribute("data-cell", cell.public_id)
    expect(page.locator("[data-viewer-image]")).to_be_visible()


def test_a_cell_whose_file_is_gone_says_so_can_be_skipped_and_is_listed_for_admins(
    page, live_server, log_in, people, cells, screenshot
):
    broken, intact = cells
    CellImage.objects.filter(pk=broken.pk).update(priority=1.0)  # the queue hands it out first
    default_storage.delete(broken.file)

    log_in(people["alice"])
    page.goto(f"{live_server.url}/annotation/label/")
    expect(page.locator("#label-app")).to_have_attribute("data-cell", broken.public_id)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This cell's image cannot be loaded. The image file is missing from storage.")
    expect(page.locator("[data-status]")).to_have_text("Image unavailable — press s to skip")
    expect(page.get_by_role("heading", name="Nothing left to label — thank you")).to_be_hidden()
    expect(page.get_by_text(re.compile("not reachable"))).to_have_count(0)
    screenshot("label-page-image-unavailable")

    # A class key cannot label a cell nobody could see.
    page.keyboard.press("1")
    expect(alert).to_contain_text("Not labeled (Neutrophil): this cell's image cannot be loaded")
    assert not Annotation.objects.filter(image=broken).exists()

    page.keyboard.press("s")
    expect(page.locator(".toast").last).to_have_text("Skipped — the cell goes back to your colleagues")
    _shown_cell(page, intact)
    expect(alert).to_be_hidden()
    expect(page.locator("[data-status]")).to_have_text("Choose a class")
    page.keyboard.press("5")
    expect(page.locator(".toast").last).to_have_text("Labeled: Monocyte — Undo with ⌫")
    assert Annotation.objects.get(image=intact, annotator=people["alice"]).cell_class.code == "monocyte"
    page.get_by_role("button", name="Log out").click()

    log_in(people["admin"])
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name=re.compile("Unavailable files")).click()
    expect(page.get_by_role("heading", name="Unavailable image files")).to_be_visible()
    rows = page.locator("[data-problem-image]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"#{broken.id}")
    expect(rows.first).to_contain_text("cell_0.png")
    expect(rows.first).to_contain_text("File missing from storage")
    screenshot("admin-unavailable-files")


def test_a_class_key_pressed_before_the_first_cell_shows_is_not_lost_silently_nor_labels_it(
    page, live_server, log_in, people, cells
):
    log_in(people["alice"])
    # No wait for the ready marker or the cell: the key goes in while the first cell is still loading, before
    # anyone could have looked at it, so it must not become a label; the page says so once the cell shows.
    page.goto(f"{live_server.url}/annotation/label/", wait_until="domcontentloaded")
    page.keyboard.press("8")
    expect(page.locator(".toast").last).to_contain_text("Keys pressed before the cell appeared were ignored")
    _shown_cell(page, cells[0])
    assert not Annotation.objects.filter(annotator=people["alice"]).exists()
    page.keyboard.press("8")  # now the cell is on screen: the key labels it
    expect(page.locator(".toast").last).to_have_text("Labeled: Myeloblast — Undo with ⌫")
    _shown_cell(page, cells[1])
    assert Annotation.objects.get(image=cells[0], annotator=people["alice"]).cell_class.code == "myeloblast"


def test_a_class_key_pressed_before_the_consensus_cell_is_ready_is_kept(page, live_server, log_in, people, cells):
    for annotator, code in [(people["alice"], "neutrophil"), (people["bob"], "lymphocyte")]:
        hold(image=cells[0], annotator=annotator)
        annotation_submit(image_id=cells[0].id, annotator=annotator, cell_class=CellClass.objects.get(code=code))
    log_in(people["adj"])
    page.goto(f"{live_server.url}/annotation/consensus/", wait_until="domcontentloaded")
    page.keyboard.press("6")
    page.keyboard.press("Enter")
    expect(page.locator(".toast").last).to_have_text("Resolved: Lymphocyte")
    expect(page.get_by_role("heading", name="Consensus queue is empty")).to_be_visible()
    assert CellImage.objects.get(pk=cells[0].pk).final_label.code == "lymphocyte"

"""In a real browser: log in, browse and open images, upload a zip and follow its import, role refusals."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from annotation.models import Case, ImportBatch, ImportItem
from core.jobs import JobStatus
from core.roles import Role
from tests.factories.annotation import batch_make, image_make
from tests.helpers import PASSWORD, zip_of_cells


@pytest.fixture
def admin(make_user):
    return make_user(Role.ADMIN, password=PASSWORD)


def _images_loaded(page, selector: str) -> list[int]:
    """naturalWidth of each matching <img>: 0 means the browser could not load or decode it."""
    return page.eval_on_selector_all(selector, "imgs => imgs.map(img => img.complete ? img.naturalWidth : 0)")


def test_admin_logs_in_sees_thumbnails_and_opens_an_image(page, live_server, log_in, admin, screenshot):
    batch = batch_make(created_by=admin, source_name="di60-week12.zip")
    case = Case.objects.create(code="P-0042", diagnosis=Case.Diagnosis.AML)
    labels = ["myeloblast", "lymphoblast", "neutrophil", "monocyte", "eosinophil", "basophil"]
    images = [
        image_make(
            batch=batch, case=case if i % 2 else None, reference_label=label, final_label=label if i < 2 else None
        )
        for i, label in enumerate(labels)
    ]
    log_in(admin)
    images_tile = page.locator(".tile", has=page.get_by_role("heading", name="Images", exact=True))
    expect(images_tile).to_contain_text("6 cell images")
    screenshot("home-admin")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Images").click()
    expect(page.get_by_role("heading", name="Cell images")).to_be_visible()
    cards = page.locator(".image-card")
    expect(cards).to_have_count(len(images))
    page.wait_for_load_state("networkidle")
    assert all(width == 64 for width in _images_loaded(page, ".image-card img")), "every thumbnail must load"
    expect(cards.first).to_contain_text(images[0].sha256[:12])
    expect(cards.first).to_contain_text("Myeloblast")
    screenshot("image-list")

    page.get_by_label("Reference label").select_option("monocyte")
    page.get_by_role("button", name="Apply filters").click()
    expect(cards).to_have_count(1)

    cards.first.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/annotation/images/{images[3].id}/$"))
    expect(page.locator(".sha-full")).to_have_text(images[3].sha256)
    page.wait_for_load_state("networkidle")
    assert _images_loaded(page, ".viewer img") == [96], "the full image must load"
    screenshot("image-detail")


def test_admin_uploads_a_zip_and_reads_the_per_file_report(
    page, live_server, log_in, admin, screenshot, no_script_errors
):
    log_in(admin)
    page.goto(f"{live_server.url}/annotation/imports/")
    page.get_by_role("link", name="New import").click()
    expect(page.locator("#trusted-warning")).to_contain_text("final labels")
    archive = zip_of_cells(count=3, bad_name="broken.png", duplicate=True)
    page.get_by_label("Zip archive of cell images").set_input_files(
        {"name": "week12.zip", "mimeType": "application/zip", "buffer": archive}
    )
    page.get_by_label("Case from folder").check()
    screenshot("upload-form")
    page.get_by_role("button", name="Upload and import").click()

    expect(page).to_have_url(re.compile(r"/annotation/imports/\d+/$"))
    expect(page.locator("[data-batch-status]")).to_have_text("Succeeded")
    report = page.locator("#report table")
    expect(report.locator("tbody tr")).to_have_count(5)
    expect(page.locator('[data-field="imported"]')).to_have_text("3")
    expect(page.locator('[data-field="duplicates"]')).to_have_text("1")
    expect(page.locator('[data-field="rejected"]')).to_have_text("1")

    batch = ImportBatch.objects.get()
    broken = report.locator("tr", has_text="broken.png")
    expect(broken.locator(".badge")).to_have_text("Rejected")
    reason = batch.items.get(name__endswith="broken.png").reason
    assert reason
    expect(broken).to_contain_text(reason)

    duplicate = batch.items.get(outcome=ImportItem.Outcome.DUPLICATE)
    row = report.locator("tr", has_text=duplicate.name)
    expect(row).to_contain_text("Duplicate of")
    expect(row.get_by_role("link")).to_have_attribute("href", f"/annotation/images/{duplicate.image_id}/")
    screenshot("batch-done")

    page.get_by_role("link", name="Imports", exact=True).first.click()
    expect(page.locator("table.data tbody tr")).to_have_count(1)
    expect(page.locator("table.data tbody tr .badge.succeeded")).to_have_text("Succeeded")
    screenshot("batch-list")


def test_batch_page_follows_a_running_import_live(page, live_server, log_in, admin, screenshot, no_script_errors):
    batch = batch_make(created_by=admin, source_name="live.zip", status=JobStatus.RUNNING, total=4)
    log_in(admin)
    page.goto(f"{live_server.url}/annotation/imports/{batch.id}/")
    expect(page.locator("#report-pending")).to_be_visible()

    ImportBatch.objects.filter(pk=batch.pk).update(done=2, imported=2)
    expect(page.locator('[data-field="done"]')).to_have_text("2")
    expect(page.locator("[data-batch-status]")).to_have_text("Running")
    expect(page.locator("[data-progress-bar]")).to_have_attribute("aria-valuenow", "50")
    screenshot("batch-running")

    ImportItem.objects.create(batch=batch, name="a.png", outcome="imported")
    ImportItem.objects.create(batch=batch, name="b.png", outcome="imported")
    ImportItem.objects.create(batch=batch, name="c.tif", outcome="rejected", reason="Not an image this reader knows.")
    ImportItem.objects.create(batch=batch, name="d.png", outcome="rejected", reason="Larger than 20 MB.")
    ImportBatch.objects.filter(pk=batch.pk).update(done=4, rejected=2, status=JobStatus.SUCCEEDED)
    # The page reloads itself once the batch is finished and then shows the report.
    expect(page.locator("#report")).to_contain_text("Not an image this reader knows.")
    expect(page.locator("[data-batch-status]")).to_have_text("Succeeded")


def test_annotator_is_refused_the_image_list(page, live_server, log_in, make_user):
    annotator = make_user(Role.ANNOTATOR, password=PASSWORD)
    log_in(annotator)
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Images")).to_have_count(0)
    response = page.goto(f"{live_server.url}/annotation/images/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="You do not have access to this page")).to_be_visible()

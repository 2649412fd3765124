"""In a real browser: a researcher cuts a dataset version, builds its archive, watches the progress reach done,
sees the SHA-256 beside the download link, downloads (and resumes) it, and compares two versions."""

from __future__ import annotations

import hashlib
import re

import pytest
from playwright.sync_api import expect

from annotation.models import Case
from core.roles import Role
from releases.models import DatasetArchive
from releases.services.archive import archive_build
from tests.factories.annotation import batch_make, image_make
from tests.helpers import PASSWORD

LABELS = ["myeloblast", "lymphoblast", "neutrophil", "monocyte", "eosinophil"]


@pytest.fixture
def researcher(make_user):
    return make_user(Role.RESEARCHER, password=PASSWORD)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_researcher_cuts_a_version_builds_its_archive_and_downloads_it(
    page, live_server, log_in, researcher, screenshot, monkeypatch, no_script_errors
):
    batch = batch_make(created_by=researcher, source_name="di60-2026-03.zip")
    cases = [Case.objects.create(code=f"P-{i:03d}", site="Seoul" if i % 2 else "Busan") for i in range(10)]
    for i in range(40):
        image_make(batch=batch, case=cases[i % 10] if i < 30 else None, final_label=LABELS[i % 5], with_thumbnail=False)
    # The worker is "busy": the build stays queued until this test runs it, so the page must poll for it.
    queued: list[int] = []
    monkeypatch.setattr("releases.tasks.dataset_archive_build.delay", queued.append)

    log_in(researcher)
    page.goto(f"{live_server.url}/releases/")
    expect(page.locator("#release-preview")).to_contain_text("40 images have a final label now")
    page.get_by_role("link", name="Cut a new version").click()
    page.get_by_label("Title").fill("Paper submission")
    screenshot("release-cut-form")
    page.get_by_role("button", name="Freeze version v1").click()

    expect(page).to_have_url(re.compile(r"/releases/v1/$"))
    expect(page.get_by_role("heading", name="Dataset v1: Paper submission")).to_be_visible()
    expect(page.locator('[data-leakage="cases"]')).to_have_text("0")
    expect(page.locator("#balance tbody tr")).to_have_count(5)
    page.get_by_role("button", name="Build archive").click()

    expect(page.locator('#archive [data-field="status"]')).to_have_text("Queued")
    assert len(queued) == 1
    screenshot("release-archive-queued")
    archive_build(archive_id=queued[0])

    # The page polls, sees the build finish, and reloads with the download link and the checksum.
    sha = page.locator("#archive-sha256")
    expect(sha).to_have_text(DatasetArchive.objects.get().sha256, timeout=20_000)
    expect(page.locator('#archive [data-field="status"]')).to_have_text("Done")
    expect(page.locator('#archive [data-field="percent"]')).to_have_text("100%")
    expect(page.locator("#archive [data-progress-bar]")).to_have_attribute("aria-valuenow", "100")
    link = page.get_by_role("link", name=re.compile(r"Download hemaloop-dataset-v1\.zip"))
    expect(link).to_be_visible()
    screenshot("release-archive-done")

    # The link serves the bytes the page vouches for, and a second request resumes from the middle.
    url = live_server.url + link.get_attribute("href")
    whole = page.request.get(url)
    assert whole.status == 200
    assert hashlib.sha256(whole.body()).hexdigest() == sha.text_content()
    rest = page.request.get(url, headers={"Range": "bytes=1000-"})
    assert rest.status == 206
    assert whole.body()[:1000] + rest.body() == whole.body()

    image_make(batch=batch, case=cases[0], final_label="basophil", with_thumbnail=False)
    page.goto(f"{live_server.url}/releases/new/")
    page.get_by_role("button", name="Freeze version v2").click()
    expect(page).to_have_url(re.compile(r"/releases/v2/$"))
    page.get_by_role("link", name="changes since v1").click()
    expect(page.locator("#diff-summary h2")).to_have_text("v1 → v2")
    expect(page.locator('[data-field="added"]')).to_have_text("1")
    expect(page.locator("#diff-changes tbody tr")).to_have_count(1)
    screenshot("release-diff")

"""The releases pages as a researcher sees them: list, cut, version page (archive, leakage, balance), diff."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from releases.models import DatasetArchive, DatasetVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(researcher, client_for):
    return client_for(researcher)


@pytest.fixture
def labeled(cell, case):
    return [cell(["neutrophil", "monocyte"][i % 2], case=case(f"P-{i % 4}") if i < 8 else None) for i in range(12)]


def test_the_list_shows_versions_and_what_a_new_cut_would_hold(browser, labeled, cut):
    cut(title="Pilot")
    page = browser.get("/releases/").content.decode()
    assert "Pilot" in page
    assert "/releases/v1/" in page
    assert "<strong>12</strong> images have a final label now" in page


def test_cutting_a_version_on_the_page(browser, labeled):
    form = browser.get("/releases/new/").content.decode()
    assert "Freeze version v1" in form
    assert "Neutrophil" in form
    response = browser.post("/releases/new/", {"title": "Paper", "notes": "n"})
    version = DatasetVersion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == "/releases/v1/"
    assert (version.title, version.image_count) == ("Paper", 12)


def test_cutting_with_nothing_to_freeze_shows_why(browser, cell):
    cell(None)
    response = browser.post("/releases/new/", {"title": ""})
    assert response.status_code == 200
    assert "nothing to put in a dataset version" in response.content.decode()
    assert not DatasetVersion.objects.exists()


def test_the_version_page_shows_the_leakage_check_and_the_class_balance(browser, labeled, cut):
    version = cut()
    page = browser.get("/releases/v1/").content.decode()
    assert 'data-leakage="cases">0<' in page
    assert 'data-leakage="earlier-test">0<' in page
    assert "No patient is in two splits" in page
    assert "Class balance per split" in page
    assert "Neutrophil" in page
    assert "Monocyte" in page
    for split, counts in version.class_counts.items():
        assert f"{sum(counts.values())}</th>" in page, split
    assert "Build archive" in page
    assert "archive-sha256" not in page


def test_building_the_archive_from_the_page_shows_the_sha256_beside_the_download_link(
    browser, labeled, cut, django_capture_on_commit_callbacks
):
    cut()
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post("/releases/v1/archive/")
    assert response.status_code == 302
    archive = DatasetArchive.objects.get()
    page = browser.get("/releases/v1/").content.decode()
    assert f'<code class="sha-full" id="archive-sha256">{archive.sha256}</code>' in page
    assert 'href="/releases/v1/download/"' in page
    assert "Build archive" not in page
    default_storage.delete(archive.file_name)
    assert "Build again" in browser.get("/releases/v1/").content.decode()


def test_the_diff_page_compares_the_two_newest_versions_by_default(browser, labeled, cut, cell):
    cut()
    cell("eosinophil")
    cut()
    page = browser.get("/releases/diff/").content.decode()
    assert "v1 → v2" in page
    assert 'data-field="added">1<' in page
    assert 'data-field="removed">0<' in page
    assert "eosinophil" in page
    explicit = browser.get("/releases/diff/?old=2&new=1").content.decode()
    assert "v2 → v1" in explicit
    assert 'data-field="removed">1<' in explicit


def test_the_diff_page_asks_for_two_versions(browser):
    assert "Cut at least two versions" in browser.get("/releases/diff/").content.decode()


def test_unknown_versions_are_404(browser):
    assert browser.get("/releases/v7/").status_code == 404
    assert browser.post("/releases/v7/archive/").status_code == 404

"""The releases API as a script would use it: cut, inspect, page through the manifest, build, poll, diff."""

from __future__ import annotations

import hashlib

import pytest

from releases.models import DatasetVersion, ManifestEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(researcher, api_client_for):
    return api_client_for(researcher)


@pytest.fixture
def labeled(cell, case):
    return [
        cell(["neutrophil", "monocyte", "myeloblast"][i % 3], case=case(f"P-{i % 5}") if i < 10 else None)
        for i in range(15)
    ]


def test_cut_a_version_and_read_it_back(api, labeled):
    response = api.post("/api/releases/versions/", {"title": "Paper", "notes": "AML vs ALL"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["number"], body["title"], body["image_count"], body["case_count"], body["parent"]) == (
        1,
        "Paper",
        15,
        5,
        None,
    )
    assert body["leakage"] == {
        "cases_in_several_splits": 0,
        "shared_cases": [],
        "earlier_test_in_training": 0,
        "near_duplicates_across_splits": 0,
        "near_duplicate_pairs": [],
        "clean": True,
    }
    assert body["archive"]["status"] == "not_built"
    assert body["archive"]["download_url"] is None
    assert sum(sum(c.values()) for c in body["class_counts"].values()) == 15
    assert body["url"].endswith("/api/releases/versions/1/")

    second = api.post("/api/releases/versions/", {}, format="json").json()
    assert (second["number"], second["parent"]) == (2, 1)
    listing = api.get("/api/releases/versions/").json()
    assert [v["number"] for v in listing["results"]] == [2, 1]
    detail = api.get("/api/releases/versions/1/").json()
    assert detail["taxonomy"][0]["code"] == "neutrophil"
    assert detail["sources"]


def test_cutting_with_nothing_final_is_a_400_that_says_why(api, cell):
    cell("neutrophil", final=False)
    response = api.post("/api/releases/versions/", {}, format="json")
    assert response.status_code == 400
    assert "final label" in response.json()["detail"]
    assert not DatasetVersion.objects.exists()


def test_the_manifest_pages_in_archive_order_and_filters_by_split(api, labeled, cut):
    version = cut()
    rows = api.get("/api/releases/versions/1/manifest/?page_size=100").json()
    assert rows["count"] == 15
    paths = [row["path"] for row in rows["results"]]
    assert paths == sorted(paths)
    first = rows["results"][0]
    assert set(first) == {"path", "sha256", "split", "label", "label_method", "expert_labels", "case_id"}
    test_rows = api.get("/api/releases/versions/1/manifest/?split=test").json()
    assert test_rows["count"] == ManifestEntry.objects.filter(version=version, split="test").count()
    assert {row["split"] for row in test_rows["results"]} <= {"test"}
    assert api.get("/api/releases/versions/1/manifest/?split=holdout").status_code == 400


def test_build_poll_and_download_through_the_api(api, labeled, cut, django_capture_on_commit_callbacks):
    cut()
    assert api.get("/api/releases/versions/1/archive/").json()["status"] == "not_built"
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/releases/versions/1/archive/")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    progress = api.get("/api/releases/versions/1/archive/").json()
    assert (progress["status"], progress["percent"], progress["finished"]) == ("succeeded", 100, True)
    assert progress["done"] == progress["total"] == 15 + 5
    download = api.get(progress["download_url"])
    assert download.status_code == 200
    assert hashlib.sha256(b"".join(download.streaming_content)).hexdigest() == progress["sha256"]


def test_download_negotiates_a_zip_accept_header(api, labeled, cut, django_capture_on_commit_callbacks):
    cut()
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/releases/versions/1/archive/")
    response = api.get("/api/releases/versions/1/archive/download/", HTTP_ACCEPT="application/zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"


def test_diff_between_two_versions(api, labeled, cut, cell):
    cut()
    added = cell("lymphoblast")
    cut()
    body = api.get("/api/releases/versions/1/diff/2/").json()
    assert (body["old"], body["new"], body["added"], body["removed"], body["relabeled"], body["unchanged"]) == (
        1,
        2,
        1,
        0,
        0,
        15,
    )
    assert body["changes"] == [{"sha256": added.sha256, "change": "added", "old_label": "", "new_label": "lymphoblast"}]
    assert body["per_class"] == [
        {"code": "lymphoblast", "added": 1, "removed": 0, "relabeled_away": 0, "relabeled_to": 0}
    ]
    assert api.get("/api/releases/versions/1/diff/9/").status_code == 404


def test_a_build_asked_for_while_redis_is_down_fails_with_the_reason_and_can_be_asked_again(
    api, labeled, cut, broker_unreachable, django_capture_on_commit_callbacks
):
    cut()
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/releases/versions/1/archive/").status_code == 202
    progress = api.get("/api/releases/versions/1/archive/").json()
    assert (progress["status"], progress["finished"]) == ("failed", True)
    assert progress["error"].startswith("Could not reach the task queue")
    with django_capture_on_commit_callbacks(execute=True) as sent:
        assert api.post("/api/releases/versions/1/archive/").status_code == 202
    assert len(sent) == 1  # a new try, not "already under way"

"""The annotation API: taxonomy, images with filters and pagination, import batches, upload, progress."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone

from annotation.models import Case, ImageFileProblem, ImportBatch, ImportItem
from core.jobs import JobStatus
from core.roles import Role
from tests.annotation.fakes import FakeImportService
from tests.factories.annotation import batch_make, image_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(admin_user):
    return batch_make(created_by=admin_user, source_name="di60.zip")


@pytest.fixture
def fake_import_service(monkeypatch):
    return FakeImportService().install(monkeypatch)


def test_taxonomy_lists_the_twelve_classes_in_order_for_any_role(api_client_for, annotator):
    response = api_client_for(annotator).get("/api/annotation/taxonomy/")
    assert response.status_code == 200
    assert [c["code"] for c in response.json()][:3] == ["neutrophil", "band_neutrophil", "eosinophil"]
    assert len(response.json()) == 12
    assert set(response.json()[0]) == {"code", "name", "group", "hotkey", "order", "is_active"}


def test_image_list_returns_metadata_labels_and_file_links(api_client_for, researcher, batch):
    case = Case.objects.create(code="P-7")
    image = image_make(
        batch=batch, case=case, reference_label="myeloblast", analyzer_class="lymphoblast", final_label="myeloblast"
    )
    body = api_client_for(researcher).get("/api/annotation/images/").json()
    assert body["count"] == 1
    [row] = body["results"]
    assert row["sha256"] == image.sha256
    assert (row["case"], row["batch"]) == ("P-7", batch.id)
    assert (row["reference_label"], row["analyzer_class"], row["final_label"]) == (
        "myeloblast",
        "lymphoblast",
        "myeloblast",
    )
    assert row["file_url"] == f"http://testserver/annotation/images/{image.id}/file"
    assert row["thumbnail_url"] == f"http://testserver/annotation/images/{image.id}/thumb"


def test_image_list_filters_and_paginates(api_client_for, admin_user, batch):
    other = batch_make(created_by=admin_user)
    first = image_make(batch=batch, reference_label="monocyte")
    image_make(batch=batch, reference_label="basophil", final_label="basophil")
    third = image_make(batch=other, reference_label="monocyte")
    client = api_client_for(admin_user)

    def ids(**params):
        return [row["id"] for row in client.get("/api/annotation/images/", params).json()["results"]]

    assert ids(reference_label="monocyte") == [first.id, third.id]
    assert ids(batch=other.id) == [third.id]
    assert ids(status="unlabeled") == [first.id, third.id]
    page = client.get("/api/annotation/images/", {"page_size": 2, "page": 2}).json()
    assert page["count"] == 3
    assert [row["id"] for row in page["results"]] == [third.id]
    assert page["previous"] is not None
    assert page["next"] is None


def test_image_list_rejects_unknown_filter_values(api_client_for, admin_user):
    response = api_client_for(admin_user).get("/api/annotation/images/", {"reference_label": "dragon", "status": "x"})
    assert response.status_code == 400
    assert set(response.json()) == {"reference_label", "status"}


def test_image_detail_and_404(api_client_for, admin_user, batch):
    image = image_make(batch=batch)
    client = api_client_for(admin_user)
    assert client.get(f"/api/annotation/images/{image.id}/").json()["original_name"] == image.original_name
    assert client.get("/api/annotation/images/999999/").status_code == 404


def test_batch_list_detail_items_and_progress(api_client_for, admin_user, batch):
    original = image_make(batch=batch)
    running = batch_make(
        created_by=admin_user,
        source_name="more.zip",
        status=JobStatus.RUNNING,
        total=8,
        done=2,
        duplicates=1,
        rejected=1,
        skipped=3,
    )
    ImportItem.objects.create(batch=running, name="dup.png", outcome="duplicate", image=original)
    ImportItem.objects.create(batch=running, name="x.txt", outcome="rejected", reason="Not an image file.")
    client = api_client_for(admin_user)

    listing = client.get("/api/annotation/batches/").json()
    assert [row["id"] for row in listing["results"]] == [running.id, batch.id]  # newest first
    detail = client.get(f"/api/annotation/batches/{running.id}/").json()
    assert (detail["status"], detail["total"], detail["done"], detail["rejected"]) == ("running", 8, 2, 1)
    assert detail["requested_by"] == admin_user.username
    assert detail["items_url"].endswith(f"/api/annotation/batches/{running.id}/items/")

    items = client.get(detail["items_url"]).json()["results"]
    assert [(i["name"], i["outcome"], i["image"]) for i in items] == [
        ("dup.png", "duplicate", original.id),
        ("x.txt", "rejected", None),
    ]
    assert items[1]["reason"] == "Not an image file."
    rejected = client.get(detail["items_url"], {"outcome": "rejected"}).json()["results"]
    assert [i["name"] for i in rejected] == ["x.txt"]

    progress = client.get(detail["progress_url"]).json()
    assert progress == {
        # The progress every job reports ...
        "id": running.id,
        "kind": "import",
        "status": "running",
        "status_display": "Running",
        "finished": False,
        "done": 2,
        "total": 8,
        "percent": 25,
        "per_second": None,  # not started by a worker: no rate, no time left
        "eta_seconds": None,
        "error": "",
        "requested_at": running.requested_at.isoformat(),
        "started_at": None,
        "finished_at": None,
        # ... and the batch's own counts.
        "imported": 0,
        "duplicates": 1,
        "rejected": 1,
        "skipped": 3,
        "near_duplicates": 0,
    }


def test_progress_of_a_running_batch_has_its_rate_and_time_left(api_client_for, admin_user):
    now = timezone.now()
    running = batch_make(
        created_by=admin_user,
        status=JobStatus.RUNNING,
        started_at=now - timedelta(seconds=10),
        heartbeat_at=now,
        done=20,
        total=60,
        imported=20,
    )
    progress = api_client_for(admin_user).get(f"/api/annotation/batches/{running.id}/progress/").json()
    assert progress["percent"] == 33
    assert 1.5 < progress["per_second"] <= 2.0  # 20 files in a little over 10 s
    assert 20 <= progress["eta_seconds"] <= 27  # 40 files left at that rate


def test_progress_of_a_failed_empty_batch_is_finished(api_client_for, admin_user):
    failed = batch_make(created_by=admin_user, status=JobStatus.FAILED, error="The zip is corrupt.")
    progress = api_client_for(admin_user).get(f"/api/annotation/batches/{failed.id}/progress/").json()
    assert (progress["finished"], progress["status_display"], progress["error"]) == (
        True,
        "Failed",
        "The zip is corrupt.",
    )
    assert progress["percent"] == 0  # nothing of it was imported


def test_batch_create_uploads_through_the_import_service(api_client_for, admin_user, fake_import_service):
    response = api_client_for(admin_user).post(
        "/api/annotation/batches/",
        {
            "upload": SimpleUploadedFile("cells.zip", b"PK..."),
            "case_from_folder": "true",
        },
        format="multipart",
    )
    assert response.status_code == 201
    assert response.json()["id"] == ImportBatch.objects.get().id
    assert response.json()["status"] == "queued"
    [call] = fake_import_service.calls
    assert (call["upload_name"], call["trusted"], call["case_from_folder"], call["csv_name"]) == (
        "cells.zip",
        False,
        True,
        None,
    )


def test_batch_create_answers_400_with_the_rejection_message(api_client_for, admin_user, fake_import_service):
    client = api_client_for(admin_user)
    rejected = client.post(
        "/api/annotation/batches/", {"upload": SimpleUploadedFile("reject.zip", b"x")}, format="multipart"
    )
    assert rejected.status_code == 400
    assert rejected.json() == {"detail": "This file is not a zip archive.", "code": "import_rejected"}
    missing = client.post("/api/annotation/batches/", {}, format="multipart")
    assert missing.status_code == 400
    assert "upload" in missing.json()
    assert not ImportBatch.objects.exists()


def test_openapi_schema_generates_without_warnings(tmp_path):
    # --fail-on-warn turns every drf-spectacular warning (an undocumented endpoint, a guessed type) into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    for path in (
        "/api/annotation/taxonomy/",
        "/api/annotation/images/{image_id}/",
        "/api/annotation/batches/{batch_id}/items/",
        "/api/annotation/batches/{batch_id}/progress/",
    ):
        assert f"  {path}:" in schema
    assert "multipart/form-data" in schema


def test_a_missing_image_file_is_410_with_a_code_and_is_recorded_once_for_admins(
    api_client_for, annotator, admin_user, client_for, batch
):
    image = image_make(batch=batch)
    default_storage.delete(image.file)
    client = api_client_for(annotator)
    responses = [client.get(f"/api/annotation/cells/{image.public_id}/file/") for _ in range(2)]
    assert [(r.status_code, r.json()) for r in responses] == [
        (410, {"detail": "The image file is missing from storage.", "code": "image_file_missing"})
    ] * 2
    [problem] = ImageFileProblem.objects.all()
    assert (problem.image, problem.reason, problem.path) == (image, "missing", image.file)
    listing = client_for(admin_user).get("/annotation/images/unavailable/").content.decode()
    assert f'data-problem-image="{image.id}"' in listing
    assert "File missing from storage" in listing


def test_an_unreadable_image_file_is_410_unreadable(api_client_for, annotator, batch):
    image = image_make(batch=batch)
    # A directory where the file should be: storage says it exists, opening it fails as a real OS error.
    path = default_storage.path(image.file)
    default_storage.delete(image.file)
    os.mkdir(path)
    response = api_client_for(annotator).get(f"/api/annotation/cells/{image.public_id}/file/")
    assert (response.status_code, response.json()["code"]) == (410, "image_file_unreadable")
    assert ImageFileProblem.objects.get(image=image).reason == "unreadable"


def test_an_image_id_that_does_not_exist_is_still_404(api_client_for, admin_user):
    assert api_client_for(admin_user).get("/api/annotation/images/999999/file/").status_code == 404


def test_annotators_reach_files_by_public_id_only_and_a_database_id_is_an_unknown_id(
    api_client_for, client_for, annotator, batch
):
    image = image_make(batch=batch, final_label="neutrophil")  # even a final cell, which hides nothing
    api, pages = api_client_for(annotator), client_for(annotator)
    assert api.get(f"/api/annotation/cells/{image.public_id}/file/").status_code == 200

    def answer(response):
        # The 404 page's logout form carries a fresh CSRF token each time; nothing else may differ.
        body = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)
        return response.status_code, body, response.get("Content-Type")

    for route in ("/api/annotation/images/{}/file/", "/annotation/images/{}/file", "/annotation/images/{}/thumb"):
        client = api if route.startswith("/api/") else pages
        assert answer(client.get(route.format(image.id))) == answer(client.get(route.format(999999)))
        assert client.get(route.format(image.id)).status_code == 404, route
    for not_a_public_id in (image.id, image.sha256, "999999"):
        assert answer(api.get(f"/api/annotation/cells/{not_a_public_id}/file/")) == answer(
            api.get("/api/annotation/cells/no-such-cell/file/")
        )


def test_checking_again_forgets_a_problem_once_the_file_is_restored(
    api_client_for, annotator, admin_user, client_for, batch
):
    image = image_make(batch=batch)
    data = default_storage.open(image.file).read()
    default_storage.delete(image.file)
    api_client_for(annotator).get(f"/api/annotation/cells/{image.public_id}/file/")
    admin = client_for(admin_user)
    admin.post("/annotation/images/unavailable/")
    assert ImageFileProblem.objects.filter(image=image).exists()  # still missing: still listed

    default_storage.save(image.file, ContentFile(data))
    response = admin.post("/annotation/images/unavailable/", follow=True)
    assert "Checked again: 1 file can be served again." in response.content.decode()
    assert not ImageFileProblem.objects.exists()
    assert api_client_for(annotator).get(f"/api/annotation/cells/{image.public_id}/file/").status_code == 200


def test_the_queue_hands_out_no_cell_whose_file_is_known_unavailable_and_admins_still_see_it(
    api_client_for, make_user, admin_user, client_for, batch
):
    broken = image_make(batch=batch, priority=1.0)  # first in the queue
    intact = image_make(batch=batch)
    data = default_storage.open(broken.file).read()
    default_storage.delete(broken.file)
    alice = api_client_for(make_user(Role.ANNOTATOR))
    # Nobody knew yet: the queue hands it out, the file answers 410 and the problem is recorded.
    assert alice.post("/api/annotation/queue/next/").json()["image"] == broken.public_id
    assert alice.get(f"/api/annotation/cells/{broken.public_id}/file/").status_code == 410

    # From now on it is handed to no one: not to a colleague, not even again to alice, who still holds it.
    bob = api_client_for(make_user(Role.ANNOTATOR))
    for client in (alice, bob):
        assert client.post("/api/annotation/queue/next/").json()["image"] == intact.public_id
        assert client.get("/api/annotation/queue/progress/").json()["waiting"] == 1
    for client in (alice, bob):
        labeled = client.post(
            "/api/annotation/labels/", {"image": intact.public_id, "cell_class": "monocyte"}, format="json"
        )
        assert labeled.status_code == 201
        assert client.post("/api/annotation/queue/next/").status_code == 204
        assert client.get("/api/annotation/queue/progress/").json()["waiting"] == 0
    admin = client_for(admin_user)
    assert f'data-problem-image="{broken.id}"' in admin.get("/annotation/images/unavailable/").content.decode()

    # Restored and checked again by an admin: back in the queue.
    default_storage.save(broken.file, ContentFile(data))
    admin.post("/annotation/images/unavailable/")
    assert bob.post("/api/annotation/queue/next/").json()["image"] == broken.public_id

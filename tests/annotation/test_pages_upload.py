"""Uploads through the page and the API with the real import service (Celery runs eagerly in tests)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.models import CellImage, ImportBatch
from tests.helpers import zip_of_cells

pytestmark = pytest.mark.django_db


def test_zip_uploaded_through_the_page_is_imported_and_reported(
    client_for, admin_user, django_capture_on_commit_callbacks
):
    archive = zip_of_cells(count=2, bad_name="broken.png", duplicate=True)
    client = client_for(admin_user)
    # The service queues the task on commit; run it as a real commit would, before the redirect is followed.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("annotation:batch_create"),
            {
                "upload": SimpleUploadedFile("week3.zip", archive, content_type="application/zip"),
            },
        )
    response = client.get(response["Location"])
    batch = ImportBatch.objects.get()
    assert response.wsgi_request.path == reverse("annotation:batch_detail", args=[batch.id])
    assert (batch.status, batch.imported, batch.duplicates, batch.rejected) == ("succeeded", 2, 1, 1)
    html = response.content.decode()
    assert 'data-finished="true"' in html
    assert "cells/broken.png" in html
    assert batch.items.get(name="cells/broken.png").reason in html
    duplicate = batch.items.get(outcome="duplicate")
    assert f'href="/annotation/images/{duplicate.image_id}/"' in html
    assert CellImage.objects.count() == 2


def test_a_file_that_is_not_a_zip_is_refused_on_the_form(client_for, admin_user):
    response = client_for(admin_user).post(
        reverse("annotation:batch_create"),
        {
            "upload": SimpleUploadedFile("cells.zip", b"not a zip at all"),
        },
    )
    assert response.status_code == 200
    assert "is not a zip archive" in response.content.decode()
    assert not ImportBatch.objects.exists()


def test_zip_uploaded_through_the_api_reports_progress_until_done(
    api_client_for, admin_user, django_capture_on_commit_callbacks
):
    client = api_client_for(admin_user)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(
            "/api/annotation/batches/",
            {
                "upload": SimpleUploadedFile("api.zip", zip_of_cells(count=3)),
                "trusted": "false",
            },
            format="multipart",
        )
    assert response.status_code == 201
    progress_url = response.json()["progress_url"]
    before = client.get(progress_url).json()
    assert (before["status"], before["finished"], before["percent"]) == ("queued", False, 0)
    for task in queued:
        task()
    after = client.get(progress_url).json()
    assert (after["status"], after["finished"], after["imported"], after["percent"]) == ("succeeded", True, 3, 100)
    rejected = client.post(
        "/api/annotation/batches/", {"upload": SimpleUploadedFile("x.zip", b"nope")}, format="multipart"
    )
    assert rejected.status_code == 400
    assert "is not a zip archive" in rejected.json()["detail"]

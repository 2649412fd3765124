"""The annotation pages as a user sees them: image list, image files, import pages (the image page itself is
in tests/dashboard/test_pages.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from annotation.models import Case, CellImage, ImageFileProblem, ImportBatch, ImportItem, LabelStatus
from core.jobs import JobStatus
from core.roles import Role
from tests.annotation.fakes import FakeImportService
from tests.factories.annotation import batch_make, image_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(admin_user):
    return batch_make(created_by=admin_user, source_name="di60-week12.zip")


@pytest.fixture
def case():
    return Case.objects.create(code="P-0042", diagnosis=Case.Diagnosis.AML)


@pytest.fixture
def fake_import_service(monkeypatch):
    return FakeImportService().install(monkeypatch)


def _ids(response) -> list[int]:
    return [image.id for image in response.context["page"]]


# --- image list ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role_fixture", ["admin_user", "researcher"])
def test_image_list_shows_thumbnails_and_metadata(request, role_fixture, client_for, batch, case):
    image = image_make(batch=batch, case=case, reference_label="myeloblast", final_label="myeloblast")
    pending = image_make(batch=batch, reference_label="lymphoblast")
    response = client_for(request.getfixturevalue(role_fixture)).get(reverse("annotation:image_list"))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'src="/annotation/images/{image.id}/thumb"' in html
    assert image.sha256[:12] in html
    assert pending.sha256[:12] in html
    assert "P-0042" in html
    assert f"#{batch.id}" in html
    assert "Myeloblast" in html
    assert "Lymphoblast" in html
    assert "Needs labels" in html  # the pending image's status
    assert "2 images" in html


def test_image_list_filters_by_case_batch_reference_label_and_status(client_for, admin_user, batch, case):
    other_batch = batch_make(created_by=admin_user, source_name="second.zip")
    in_case = image_make(batch=batch, case=case, reference_label="monocyte")
    labeled = image_make(batch=other_batch, reference_label="basophil", final_label="basophil")
    unlabeled = image_make(batch=other_batch, reference_label="monocyte")
    client = client_for(admin_user)
    url = reverse("annotation:image_list")
    assert _ids(client.get(url, {"case": case.id})) == [in_case.id]
    assert _ids(client.get(url, {"batch": other_batch.id})) == [labeled.id, unlabeled.id]
    assert _ids(client.get(url, {"reference_label": "monocyte"})) == [in_case.id, unlabeled.id]
    assert _ids(client.get(url, {"status": "final"})) == [labeled.id]
    assert _ids(client.get(url, {"status": "unlabeled", "batch": other_batch.id})) == [unlabeled.id]


def test_image_list_with_an_unknown_filter_value_says_so_and_lists_nothing(client_for, admin_user, batch):
    image_make(batch=batch)
    response = client_for(admin_user).get(reverse("annotation:image_list"), {"case": 999999})
    assert response.status_code == 200
    assert _ids(response) == []
    assert "Some filters are not valid" in response.content.decode()


def test_image_list_paginates_and_keeps_the_filters_in_page_links(client_for, admin_user, batch, monkeypatch):
    monkeypatch.setattr("annotation.views.IMAGES_PER_PAGE", 2)
    images = [image_make(batch=batch, reference_label="eosinophil") for _ in range(5)]
    client = client_for(admin_user)
    url = reverse("annotation:image_list")
    first = client.get(url, {"reference_label": "eosinophil"})
    assert _ids(first) == [images[0].id, images[1].id]
    assert "Page 1 of 3" in first.content.decode()
    assert "?reference_label=eosinophil&amp;page=2" in first.content.decode()
    assert _ids(client.get(url, {"reference_label": "eosinophil", "page": 3})) == [images[4].id]
    assert _ids(client.get(url, {"page": "not-a-number"})) == [images[0].id, images[1].id]


# --- image files -------------------------------------------------------------------------------------


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


def _jpeg_with_metadata(secret: str) -> bytes:
    exif = Image.Exif()
    exif[0x010E] = f"analyzer class: {secret}"  # ImageDescription, where analyzers write their pre-class
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 90, 200)).save(
        out, format="JPEG", exif=exif.tobytes(), comment=f"pre-class {secret}".encode()
    )
    return out.getvalue()


def _stored_jpeg(*, batch, secret: str):
    data = _jpeg_with_metadata(secret)
    image = image_make(batch=batch, analyzer_class="myeloblast", original_name=f"{secret}/cell_17.jpg")
    path = f"images/{image.sha256[:2]}/{image.sha256}.jpg"
    default_storage.save(path, ContentFile(data))
    CellImage.objects.filter(pk=image.pk).update(file=path, format="JPEG", thumbnail="")
    image.refresh_from_db()
    return image, data


def _pixels(data: bytes):
    with Image.open(io.BytesIO(data)) as decoded:
        return np.asarray(decoded.convert("RGB"))


def test_annotators_get_the_pixels_without_metadata_under_a_name_that_says_nothing(
    client_for, annotator, make_user, batch
):
    image, original = _stored_jpeg(batch=batch, secret="myeloblast")
    # An admin who also labels opens a final cell by database id: still only the pixels, since they label.
    dual = make_user(Role.ADMIN)
    dual.groups.add(Group.objects.get(name=Role.ANNOTATOR.value))
    CellImage.objects.filter(pk=image.pk).update(label_status=LabelStatus.FINAL)
    for client, url in (
        (client_for(annotator), reverse("annotation_api:cell_file", args=[image.public_id])),  # the label page's
        (client_for(dual), reverse("annotation:image_file", args=[image.id])),
        (client_for(dual), reverse("annotation:image_thumbnail", args=[image.id])),  # no thumbnail: the full image
        (client_for(dual), f"/api/annotation/images/{image.id}/file/"),
    ):
        response = client.get(url)
        assert response.status_code == 200
        body = _body(response)
        assert b"myeloblast" not in body
        assert b"Exif" not in body
        assert np.array_equal(_pixels(body), _pixels(original))
        assert response["Content-Type"] == "image/jpeg"
        assert response["Content-Disposition"] == 'inline; filename="cell.jpg"'
        assert "private" in response["Cache-Control"]
        assert not response.has_header("ETag")
        assert not response.has_header("Last-Modified")


def test_a_png_reaches_annotators_without_its_text_chunks(client_for, annotator, batch):
    image = image_make(batch=batch, reference_label="myeloblast", original_name="myeloblast/cell_17.png")
    stored = default_storage.open(image.file).read()
    response = client_for(annotator).get(reverse("annotation_api:cell_file", args=[image.public_id]))
    body = _body(response)
    assert (response.status_code, response["Content-Type"]) == (200, "image/png")
    assert np.array_equal(_pixels(body), _pixels(stored))
    assert b"tEXt" not in body
    assert image.sha256 not in response["Content-Disposition"]
    assert "myeloblast" not in response["Content-Disposition"]


def test_a_file_whose_metadata_cannot_be_removed_is_refused_not_served(client_for, annotator, admin_user, batch):
    image, original = _stored_jpeg(batch=batch, secret="myeloblast")
    default_storage.delete(image.file)
    default_storage.save(image.file, ContentFile(original[:-200]))  # truncated inside the scan
    response = client_for(annotator).get(reverse("annotation_api:cell_file", args=[image.public_id]))
    assert (response.status_code, response.json()) == (
        410,
        {"detail": "The image file cannot be read.", "code": "image_file_unreadable"},
    )
    assert ImageFileProblem.objects.get(image=image).reason == "unreadable"


def test_admins_who_may_see_the_cell_get_the_stored_bytes_named_by_hash(client_for, admin_user, batch):
    image, original = _stored_jpeg(batch=batch, secret="myeloblast")
    response = client_for(admin_user).get(reverse("annotation:image_file", args=[image.id]))
    assert _body(response) == original
    assert image.sha256 in response["Content-Disposition"]
    assert "myeloblast" not in response["Content-Disposition"]


def test_thumbnail_is_served_and_falls_back_to_the_full_image(client_for, admin_user, batch):
    with_thumb = image_make(batch=batch, final_label="neutrophil")
    without_thumb = image_make(batch=batch, with_thumbnail=False, final_label="neutrophil")
    client = client_for(admin_user)
    thumb = client.get(reverse("annotation:image_thumbnail", args=[with_thumb.id]))
    assert thumb["Content-Type"] == "image/jpeg"
    assert _body(thumb) == default_storage.open(with_thumb.thumbnail).read()
    fallback = client.get(reverse("annotation:image_thumbnail", args=[without_thumb.id]))
    assert _body(fallback) == default_storage.open(without_thumb.file).read()


def test_image_file_missing_from_storage_is_410_gone(client_for, admin_user, batch):
    image = image_make(batch=batch)
    default_storage.delete(image.file)
    response = client_for(admin_user).get(reverse("annotation:image_file", args=[image.id]))
    assert (response.status_code, response.content) == (410, b"The image file is missing from storage.")


def test_annotators_never_see_labels_on_the_pages_they_can_open(client_for, annotator, batch):
    image_make(batch=batch, reference_label="myeloblast", analyzer_class="promyelocyte", final_label="lymphoblast")
    client = client_for(annotator)
    home = client.get(reverse("home")).content.decode()
    for name in ("Myeloblast", "Promyelocyte", "Lymphoblast"):
        assert name not in home
    assert client.get(reverse("annotation:image_list")).status_code == 403
    assert "You do not have access" in client.get(reverse("annotation:image_list")).content.decode()


# --- every page --------------------------------------------------------------------------------------


def test_every_page_links_the_favicon_that_static_files_serve(client_for, annotator):
    from django.contrib.staticfiles import finders

    html = client_for(annotator).get(reverse("home")).content.decode()
    assert 'rel="icon"' in html
    assert "favicon.svg" in html
    assert finders.find("img/favicon.svg")


# --- import pages ----------------------------------------------------------------------------------------


def test_batch_list_shows_status_progress_and_counts(client_for, admin_user):
    running = batch_make(
        created_by=admin_user,
        source_name="running.zip",
        status=JobStatus.RUNNING,
        total=40,
        done=10,
        imported=8,
        duplicates=1,
        rejected=1,
    )
    batch_make(created_by=admin_user, source_name="failed.zip", status=JobStatus.FAILED, error="bad zip")
    html = client_for(admin_user).get(reverse("annotation:batch_list")).content.decode()
    assert "running.zip" in html
    assert "failed.zip" in html
    assert 'aria-valuenow="25"' in html
    assert "10 / 40" in html
    assert reverse("annotation:batch_detail", args=[running.id]) in html
    assert '<span class="badge failed">Failed</span>' in html


def test_running_batch_page_polls_progress_and_holds_the_report_back(client_for, admin_user):
    batch = batch_make(created_by=admin_user, status=JobStatus.RUNNING, total=4, done=1, imported=1)
    ImportItem.objects.create(batch=batch, name="a.png", outcome=ImportItem.Outcome.IMPORTED)
    html = client_for(admin_user).get(reverse("annotation:batch_detail", args=[batch.id])).content.decode()
    assert f'data-progress-url="/api/annotation/batches/{batch.id}/progress/"' in html
    assert 'data-finished="false"' in html
    assert "js/batch-progress.js" in html
    assert 'aria-valuenow="25"' in html
    assert "appears here when the import has finished" in html
    assert 'id="report"' not in html


def test_finished_batch_page_shows_the_per_file_report(client_for, admin_user, batch):
    original = image_make(batch=batch)
    done = batch_make(
        created_by=admin_user, source_name="again.zip", total=3, done=3, imported=1, duplicates=1, rejected=1
    )
    new_image = image_make(batch=done)
    ImportItem.objects.create(batch=done, name="new.png", outcome="imported", image=new_image)
    ImportItem.objects.create(batch=done, name="same.png", outcome="duplicate", image=original)
    ImportItem.objects.create(batch=done, name="notes.png", outcome="rejected", reason="Not an image file.")
    client = client_for(admin_user)
    html = client.get(reverse("annotation:batch_detail", args=[done.id])).content.decode()
    assert 'data-finished="true"' in html
    assert "Not an image file." in html
    assert f'href="/annotation/images/{original.id}/"' in html  # the duplicate links to what it duplicates
    assert "Rejected (1)" in html
    only_rejected = client.get(reverse("annotation:batch_detail", args=[done.id]), {"outcome": "rejected"})
    assert [item.name for item in only_rejected.context["items"]] == ["notes.png"]


def test_upload_form_warns_that_trusted_labels_become_final(client_for, admin_user):
    html = client_for(admin_user).get(reverse("annotation:batch_create")).content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert 'name="trusted"' in html
    assert 'name="case_from_folder"' in html
    assert 'name="csv_upload"' in html
    assert "become <strong>final labels</strong>" in html


def test_upload_calls_the_import_service_and_redirects_to_the_batch(client_for, admin_user, fake_import_service):
    response = client_for(admin_user).post(
        reverse("annotation:batch_create"),
        {
            "upload": SimpleUploadedFile("cells.zip", b"PK zip bytes", content_type="application/zip"),
            "csv_upload": SimpleUploadedFile("meta.csv", b"file,case\n", content_type="text/csv"),
            "trusted": "on",
        },
    )
    batch = ImportBatch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("annotation:batch_detail", args=[batch.id])
    [call] = fake_import_service.calls
    assert call == {
        "created_by": admin_user,
        "upload_name": "cells.zip",
        "upload_bytes": b"PK zip bytes",
        "trusted": True,
        "case_from_folder": False,
        "csv_name": "meta.csv",
    }


def test_rejected_upload_shows_the_reason_on_the_form(client_for, admin_user, fake_import_service):
    response = client_for(admin_user).post(
        reverse("annotation:batch_create"),
        {
            "upload": SimpleUploadedFile("reject.zip", b"nope"),
        },
    )
    assert response.status_code == 200
    assert "This file is not a zip archive." in response.content.decode()
    assert not ImportBatch.objects.exists()


def test_upload_without_a_file_is_an_error_and_calls_nothing(client_for, admin_user, fake_import_service):
    response = client_for(admin_user).post(reverse("annotation:batch_create"), {"trusted": "on"})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert fake_import_service.calls == []

"""Files through the storage API on an S3 bucket (moto's server, as production's django-storages sees it): uploads,
images, model folders and heatmaps never touch MEDIA_ROOT; originals and archives redirect to pre-signed URLs, and
an annotator's image still streams without its hash or metadata."""

from __future__ import annotations

import hashlib
import io
import urllib.request

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from annotation.models import CellImage
from annotation.services.imports.batches import import_batch_create_from_upload
from core.storage import (
    MANIFEST,
    StoredTreeInvalid,
    storage_local_path,
    storage_tree_delete,
    storage_tree_local,
    storage_tree_store,
)
from tests.factories.annotation import image_make
from tests.helpers import zip_of_cells
from tests.s3 import bucket_keys

pytestmark = pytest.mark.django_db


def _media_files(media) -> list[str]:
    return sorted(str(path) for path in media.rglob("*") if path.is_file()) if media.exists() else []


def test_an_uploaded_zip_is_imported_from_the_bucket_and_then_deleted(
    admin_user, media, s3_storage, s3_endpoint, django_capture_on_commit_callbacks
):
    upload = SimpleUploadedFile("cells.zip", zip_of_cells(count=3), content_type="application/zip")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        batch = import_batch_create_from_upload(created_by=admin_user, upload=upload)
    assert bucket_keys(s3_endpoint, s3_storage) == [batch.source_path]
    assert batch.source_path.startswith("uploads/")

    for callback in callbacks:  # the task, eager: it reads the zip from the bucket, not from the web's disk
        callback()

    batch.refresh_from_db()
    assert (batch.status, batch.imported) == ("succeeded", 3), batch.error
    keys = bucket_keys(s3_endpoint, s3_storage)
    images = list(CellImage.objects.filter(batch=batch))
    assert sorted(keys) == sorted([image.file for image in images] + [image.thumbnail for image in images])
    assert _media_files(media) == []


def test_a_stored_folder_comes_back_checked_and_a_tampered_file_is_refused(s3_storage, tmp_path, settings):
    local = tmp_path / "run"
    (local / "plots").mkdir(parents=True)
    (local / "ensemble.json").write_text('{"classes": ["a"]}')
    (local / "plots" / "roc.png").write_bytes(b"\x89PNG fake")
    assert storage_tree_store(local_dir=local, prefix="models/run-7") == 2
    assert default_storage.exists(f"models/run-7/{MANIFEST}")

    copy = storage_tree_local(prefix="models/run-7")
    assert (copy / "ensemble.json").read_text() == '{"classes": ["a"]}'
    assert (copy / "plots" / "roc.png").read_bytes() == b"\x89PNG fake"
    assert copy.is_relative_to(tmp_path / "worker-cache")
    assert storage_tree_local(prefix="models/run-7") == copy  # one download per host

    (local / "ensemble.json").write_text('{"classes": ["a", "b"]}')  # another version: another manifest
    storage_tree_store(local_dir=local, prefix="models/run-8")
    default_storage.delete("models/run-8/ensemble.json")
    default_storage.save("models/run-8/ensemble.json", ContentFile(b'{"classes": ["b"]}'))
    with pytest.raises(StoredTreeInvalid, match="ensemble.json has SHA-256"):
        storage_tree_local(prefix="models/run-8")
    with pytest.raises(StoredTreeInvalid, match="missing"):
        storage_tree_local(prefix="models/run-9")

    assert storage_tree_delete(prefix="models/run-7") == 3
    assert not default_storage.exists(f"models/run-7/{MANIFEST}")


def test_a_worker_reads_a_stored_image_from_its_own_copy(s3_storage, batch, settings, tmp_path):
    image = image_make(batch=batch)
    path = storage_local_path(name=image.file)
    assert path.is_relative_to(tmp_path / "worker-cache")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == image.sha256


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the test's own server
        return response.read()


def test_an_original_redirects_to_a_presigned_url_for_a_researcher(s3_storage, batch, researcher, client_for):
    image = image_make(batch=batch)
    response = client_for(researcher).get(f"/api/annotation/images/{image.pk}/file/")
    assert response.status_code == 302
    url = response["Location"]
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=300" in url
    assert hashlib.sha256(_fetch(url)).hexdigest() == image.sha256


def test_an_annotator_never_gets_a_storage_url_but_the_stripped_bytes(s3_storage, batch, annotator, client_for):
    image = image_make(batch=batch)
    image.refresh_from_db()
    response = client_for(annotator).get(f"/api/annotation/cells/{image.public_id}/file/")
    assert response.status_code == 200
    assert "Location" not in response
    assert image.sha256 not in str(response.headers)
    assert response["Content-Disposition"].endswith('filename="cell.png"')
    with Image.open(io.BytesIO(b"".join(response.streaming_content))) as decoded:
        assert decoded.size == (image.width, image.height)


def test_without_redirects_an_original_streams(s3_storage, batch, researcher, client_for, settings):
    settings.HEMALOOP_DOWNLOAD_REDIRECT = False
    image = image_make(batch=batch)
    response = client_for(researcher).get(f"/api/annotation/images/{image.pk}/file/")
    assert response.status_code == 200
    assert hashlib.sha256(b"".join(response.streaming_content)).hexdigest() == image.sha256


def test_local_storage_never_redirects(batch, researcher, client_for, media):
    image = image_make(batch=batch)
    response = client_for(researcher).get(f"/api/annotation/images/{image.pk}/file/")
    assert response.status_code == 200
    assert "Location" not in response

"""Fixtures of the releases tests: a private MEDIA_ROOT for every test, final-labeled images, cases, cutting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from annotation.models import Case, CellImage
from releases.models import DatasetArchive, DatasetVersion
from releases.services.archive import archive_write
from releases.services.archive_request import archive_build_start
from releases.services.versions import dataset_version_create
from tests.factories.annotation import image_make


@pytest.fixture(autouse=True)
def _own_media(media) -> Path:
    """Each test stores its images and archives in a MEDIA_ROOT of its own."""
    return media


@pytest.fixture
def cell(batch):
    """cell("myeloblast", case=..., method=..., expert_labels=...) -> an image whose final label is that class.

    cell(None) is a final "unclassifiable" image; cell(..., final=False) one that still needs labels.
    """

    def make(
        label: str | None,
        *,
        case: Case | None = None,
        method: str = "agreement",
        expert_labels: int = 2,
        final: bool = True,
    ) -> CellImage:
        image = image_make(batch=batch, case=case, final_label=label if final else None, with_thumbnail=False)
        if final:
            CellImage.objects.filter(pk=image.pk).update(
                label_status="final", final_method=method, label_count=expert_labels
            )
        image.refresh_from_db()
        return image

    return make


@pytest.fixture
def case():
    """case("P-001", site="Seoul") -> that pseudonymous case, created on first use."""

    def make(code: str, *, site: str = "") -> Case:
        return Case.objects.get_or_create(code=code, defaults={"site": site})[0]

    return make


@pytest.fixture
def cut(researcher):
    """cut(title=...) -> the next dataset version, cut by a researcher."""

    def make(**fields) -> DatasetVersion:
        return dataset_version_create(created_by=fields.pop("created_by", researcher), **fields)

    return make


@pytest.fixture
def build(researcher, django_capture_on_commit_callbacks):
    """build(version) -> its archive after a researcher asked for it and the task ran (Celery is eager)."""

    def run(version: DatasetVersion) -> DatasetArchive:
        with django_capture_on_commit_callbacks(execute=True):
            archive_build_start(version=version, requested_by=researcher)
        return DatasetArchive.objects.get(version=version)

    return run


@pytest.fixture
def archive_bytes(tmp_path):
    """archive_bytes(version) -> the bytes of a freshly written archive of the version."""
    counter = iter(range(1_000_000))

    def write(version: DatasetVersion) -> bytes:
        path = tmp_path / f"archive-{next(counter)}.zip"
        with path.open("w+b") as out:
            result = archive_write(version=version, out=out)
        data = path.read_bytes()
        assert result.sha256 == hashlib.sha256(data).hexdigest(), "the SHA-256 hashed while writing must be the file's"
        assert result.size_bytes == len(data)
        return data

    return write

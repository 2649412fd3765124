"""Test data for the page, API and browser tests: real small cell-like images stored under MEDIA_ROOT,
and a stand-in for the import service where a test checks only how a view calls it."""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageDraw

from annotation.models import Case, CellClass, CellImage, FinalMethod, ImportBatch, LabelStatus
from annotation.services.imports.batches import ImportRejected
from core.jobs import JobStatus

_variants = itertools.count(1)


def cell_png(*, variant: int, size: tuple[int, int] = (96, 96)) -> bytes:
    """A stained-cell look-alike (pink background, purple nucleus); `variant` makes the bytes unique."""
    image = Image.new("RGB", size, (236 - variant % 20, 206, 214))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.18, h * 0.18, w * 0.82, h * 0.82), fill=(214, 170, 196))
    offset = variant % 7
    draw.ellipse((w * 0.3 + offset, h * 0.28, w * 0.68 + offset, h * 0.7), fill=(104, 52, 140 + variant % 100))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_thumbnail(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((64, 64))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def batch_make(*, created_by, source_name: str = "cells.zip", **fields) -> ImportBatch:
    fields.setdefault("status", JobStatus.SUCCEEDED)
    return ImportBatch.objects.create(requested_by=created_by, source_name=source_name, source_path="", **fields)


def image_make(
    *,
    batch: ImportBatch,
    case: Case | None = None,
    reference_label: str | None = None,
    analyzer_class: str | None = None,
    final_label: str | None = None,
    original_name: str | None = None,
    with_thumbnail: bool = True,
) -> CellImage:
    """A CellImage row whose file (and thumbnail) really exist in the default storage."""
    variant = next(_variants)
    data = cell_png(variant=variant)
    sha = hashlib.sha256(data).hexdigest()
    file_name = default_storage.save(f"images/{sha[:2]}/{sha}.png", ContentFile(data))
    thumb_name = ""
    if with_thumbnail:
        thumb_name = default_storage.save(f"thumbs/{sha[:2]}/{sha}.jpg", ContentFile(jpeg_thumbnail(data)))

    def cls(code: str | None) -> CellClass | None:
        return CellClass.objects.get(code=code) if code else None

    return CellImage.objects.create(
        sha256=sha,
        file=file_name,
        thumbnail=thumb_name,
        format="PNG",
        width=96,
        height=96,
        size_bytes=len(data),
        original_name=original_name or f"cell_{variant:04d}.png",
        case=case,
        batch=batch,
        reference_label=cls(reference_label),
        analyzer_class=cls(analyzer_class),
        final_label=cls(final_label),
        final_method=FinalMethod.ADJUDICATED if final_label else "",
        label_status=LabelStatus.FINAL if final_label else LabelStatus.NEEDS_LABELS,
    )


def zip_of_cells(*, count: int, bad_name: str | None = None, duplicate: bool = False) -> bytes:
    """A zip of `count` distinct real PNGs, optionally a byte-identical copy of the first one
    (a duplicate) and one file named like an image that is not one."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        pngs = [cell_png(variant=10_000 + next(_variants)) for _ in range(count)]
        for index, data in enumerate(pngs):
            archive.writestr(f"cells/cell_{index:03d}.png", data)
        if duplicate:
            archive.writestr("cells/copy_of_cell_000.png", pngs[0])
        if bad_name:
            archive.writestr(f"cells/{bad_name}", b"this is not an image at all")
    return buffer.getvalue()


class FakeImportService:
    """Stands in for import_batch_create_from_upload where a test checks only how a page or the API calls it:
    records the calls and rejects uploads named reject*.zip with the real ImportRejected."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def import_batch_create_from_upload(
        self, *, created_by, upload, trusted=False, case_from_folder=False, csv_upload=None
    ) -> ImportBatch:
        self.calls.append(
            {
                "created_by": created_by,
                "upload_name": upload.name,
                "upload_bytes": upload.read(),
                "trusted": trusted,
                "case_from_folder": case_from_folder,
                "csv_name": csv_upload.name if csv_upload else None,
            }
        )
        if upload.name.startswith("reject"):
            raise ImportRejected("This file is not a zip archive.")
        return batch_make(
            created_by=created_by,
            source_name=upload.name,
            status=JobStatus.QUEUED,
            trusted=trusted,
            case_from_folder=case_from_folder,
        )

    def install(self, monkeypatch) -> FakeImportService:
        for module in ("annotation.views", "annotation.api.images"):
            monkeypatch.setattr(f"{module}.import_batch_create_from_upload", self.import_batch_create_from_upload)
        return self

"""Import batches and cell images whose file (and thumbnail) really exist in the default storage."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import factory
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from annotation.models import CellClass, CellImage, FinalMethod, ImportBatch, LabelStatus, Lease
from core.jobs import JobStatus
from core.roles import Role
from tests.factories.accounts import UserFactory
from tests.helpers import cell_png, jpeg_thumbnail, next_variant

_CLASS_FIELDS = ("reference_label", "analyzer_class", "final_label")


class ImportBatchFactory(factory.django.DjangoModelFactory):
    """A finished batch (nothing left to process) created by an admin."""

    class Meta:
        model = ImportBatch

    requested_by = factory.SubFactory(UserFactory, role=Role.ADMIN)
    source_name = "cells.zip"
    source_path = ""
    status = JobStatus.SUCCEEDED


def _stored(path: str, data: bytes) -> str:
    return default_storage.save(path, ContentFile(data))


class CellImageFactory(factory.django.DjangoModelFactory):
    """CellImageFactory(batch=..., final_label="neutrophil") -> a final image; labels are given as class codes.

    Without final_label the image still needs labels; with_thumbnail=False stores no thumbnail.
    """

    class Meta:
        model = CellImage

    class Params:
        variant = factory.LazyFunction(next_variant)
        data = factory.LazyAttribute(lambda o: cell_png(variant=o.variant))
        with_thumbnail = True

    batch = factory.SubFactory(ImportBatchFactory)
    case = None
    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(o.data).hexdigest())
    file = factory.LazyAttribute(lambda o: _stored(f"images/{o.sha256[:2]}/{o.sha256}.png", o.data))
    thumbnail = factory.LazyAttribute(
        lambda o: _stored(f"thumbs/{o.sha256[:2]}/{o.sha256}.jpg", jpeg_thumbnail(o.data)) if o.with_thumbnail else ""
    )
    format = "PNG"
    width = 96
    height = 96
    size_bytes = factory.LazyAttribute(lambda o: len(o.data))
    original_name = factory.LazyAttribute(lambda o: f"cell_{o.variant:04d}.png")
    reference_label = None
    analyzer_class = None
    final_label = None
    final_method = factory.LazyAttribute(lambda o: FinalMethod.ADJUDICATED if o.final_label else "")
    label_status = factory.LazyAttribute(lambda o: LabelStatus.FINAL if o.final_label else LabelStatus.NEEDS_LABELS)

    @classmethod
    def _adjust_kwargs(cls, **kwargs):
        for field in _CLASS_FIELDS:
            if isinstance(kwargs.get(field), str):
                kwargs[field] = CellClass.objects.get(code=kwargs[field])
        return kwargs


def batch_make(*, created_by=None, **fields) -> ImportBatch:
    """The short spelling most tests use: batch_make(created_by=admin) (the admin who requested the import)."""
    if created_by is not None:
        fields["requested_by"] = created_by
    return ImportBatchFactory(**fields)


def image_make(**fields) -> CellImage:
    """The short spelling most tests use: image_make(batch=batch, final_label="neutrophil")."""
    return CellImageFactory(**fields)


def hold(*, image: CellImage, annotator) -> None:
    """Give the annotator the hold the queue would have given them, so a test can label a chosen cell
    (the service accepts labels only for held cells)."""
    Lease.objects.update_or_create(
        image=image,
        annotator=annotator,
        defaults={"expires_at": timezone.now() + timedelta(seconds=settings.HEMALOOP_LEASE_SECONDS)},
    )

"""Starting an import: check the source (a folder, a zip or an upload), record a queued batch, queue its task."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from annotation import tasks
from annotation.models import ImportBatch
from annotation.services.imports.uploads import upload_delete, upload_paths, upload_save
from annotation.services.metadata import csv_rows_read
from annotation.services.sources import SourceInvalid
from annotation.services.validation import ImportLimits, megabytes
from core.errors import AppError
from core.roles import Role, role_require


class ImportRejected(AppError):
    """The upload or source cannot be imported at all; the message says why (a form error or a 400)."""

    code = "import_rejected"


def import_batch_create(
    *,
    created_by: AbstractBaseUser,
    source: Path,
    source_name: str,
    trusted: bool = False,
    case_from_folder: bool = False,
    csv_path: Path | None = None,
    enqueue: bool = True,
) -> ImportBatch:
    """Check the source (a folder or a zip), record a queued batch and queue its processing.

    enqueue=False leaves the processing to the caller (the management commands run it in-process,
    so they work without a broker or worker).
    """
    role_require(created_by, Role.ADMIN, action="import images")
    return _batch_create(
        created_by=created_by,
        source=Path(source),
        source_name=source_name,
        trusted=trusted,
        case_from_folder=case_from_folder,
        csv_path=Path(csv_path) if csv_path is not None else None,
        source_is_upload=False,
        enqueue=enqueue,
    )


def import_batch_create_from_upload(
    *,
    created_by: AbstractBaseUser,
    upload: UploadedFile,
    trusted: bool = False,
    case_from_folder: bool = False,
    csv_upload: UploadedFile | None = None,
) -> ImportBatch:
    """Keep an uploaded zip (and CSV) under MEDIA_ROOT/uploads and queue its import."""
    role_require(created_by, Role.ADMIN, action="import images")
    limits = ImportLimits.from_settings()
    if upload.size is not None and upload.size > limits.max_upload_bytes:
        raise ImportRejected(
            f"The upload is {megabytes(upload.size)}, larger than the limit of {megabytes(limits.max_upload_bytes)}."
        )
    if not zipfile.is_zipfile(upload):
        raise ImportRejected(f"{upload.name} is not a zip archive.")
    if csv_upload is not None and csv_upload.size is not None and csv_upload.size > limits.max_csv_bytes:
        raise ImportRejected(f"The CSV is larger than the limit of {megabytes(limits.max_csv_bytes)}.")
    zip_path, csv_path = upload_paths(with_csv=csv_upload is not None)
    try:
        upload_save(upload=upload, path=zip_path)
        if csv_upload is not None and csv_path is not None:
            upload_save(upload=csv_upload, path=csv_path)
        return _batch_create(
            created_by=created_by,
            source=zip_path,
            source_name=os.path.basename(upload.name or "upload.zip"),
            trusted=trusted,
            case_from_folder=case_from_folder,
            csv_path=csv_path,
            source_is_upload=True,
            enqueue=True,
        )
    except BaseException:
        upload_delete(zip_path, csv_path)
        raise


def importer_default() -> AbstractBaseUser | None:
    """The user the management commands import as when none is named: the first superuser, else admin."""
    users = get_user_model().objects.filter(is_active=True)
    return (
        users.filter(is_superuser=True).order_by("pk").first()
        or users.filter(groups__name=Role.ADMIN.value).order_by("pk").first()
    )


def _batch_create(
    *,
    created_by: AbstractBaseUser,
    source: Path,
    source_name: str,
    trusted: bool,
    case_from_folder: bool,
    csv_path: Path | None,
    source_is_upload: bool,
    enqueue: bool,
) -> ImportBatch:
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ImportRejected(f"{source_name} is neither a folder nor a zip archive.")
    elif not source.is_dir():
        raise ImportRejected(f"{source_name} does not exist.")
    if csv_path is not None:
        if not csv_path.is_file():
            raise ImportRejected(f"The CSV {csv_path.name} does not exist.")
        try:
            # Read now for an immediate answer on the form; the task reads it again when it runs.
            csv_rows_read(path=csv_path, max_bytes=ImportLimits.from_settings().max_csv_bytes)
        except SourceInvalid as exc:
            raise ImportRejected(f"The CSV cannot be used: {exc}.") from None
    with transaction.atomic():
        batch = ImportBatch.objects.create(
            requested_by=created_by,
            source_name=source_name[:255],
            source_path=str(source.resolve()),
            csv_path=str(csv_path.resolve()) if csv_path is not None else "",
            source_is_upload=source_is_upload,
            trusted=trusted,
            case_from_folder=case_from_folder,
        )
        if enqueue:
            transaction.on_commit(lambda: tasks.import_batch_process.delay(batch.pk))
    return batch

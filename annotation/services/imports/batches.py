"""Starting an import: check the source (a folder, a zip or an upload), record a queued batch, queue its task."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from annotation import tasks
from annotation.models import ImportBatch
from annotation.services.imports.uploads import upload_delete, upload_save_local, upload_store
from annotation.services.metadata import csv_rows_read
from annotation.services.sources import SourceInvalid
from annotation.services.validation import ImportLimits, megabytes
from core.errors import AppError
from core.jobs import job_send_on_commit
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
    source, csv = Path(source), Path(csv_path) if csv_path is not None else None
    _source_check(source=source, source_name=source_name, csv_path=csv)
    return _batch_record(
        created_by=created_by,
        source_path=str(source.resolve()),
        source_name=source_name,
        trusted=trusted,
        case_from_folder=case_from_folder,
        csv_path=str(csv.resolve()) if csv is not None else "",
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
    """Check an uploaded zip (and CSV), keep them in the file storage under uploads/ and queue the import."""
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
    # Checked in a local folder of this web process, then stored: the worker that imports it may be another host.
    with tempfile.TemporaryDirectory(prefix="hemaloop-upload-") as folder:
        zip_path = Path(folder) / "upload.zip"
        csv_path = Path(folder) / "labels.csv" if csv_upload is not None else None
        upload_save_local(upload=upload, path=zip_path)
        if csv_upload is not None and csv_path is not None:
            upload_save_local(upload=csv_upload, path=csv_path)
        source_name = os.path.basename(upload.name or "upload.zip")
        _source_check(source=zip_path, source_name=source_name, csv_path=csv_path)
        stored: list[str] = []
        try:
            stored.append(upload_store(path=zip_path, extension="zip"))
            if csv_path is not None:
                stored.append(upload_store(path=csv_path, extension="csv"))
            return _batch_record(
                created_by=created_by,
                source_path=stored[0],
                source_name=source_name,
                trusted=trusted,
                case_from_folder=case_from_folder,
                csv_path=stored[1] if len(stored) > 1 else "",
                source_is_upload=True,
                enqueue=True,
            )
        except BaseException:
            upload_delete(*stored)
            raise


def importer_default() -> AbstractBaseUser | None:
    """The user the management commands import as when none is named: the first superuser, else admin."""
    users = get_user_model().objects.filter(is_active=True)
    return (
        users.filter(is_superuser=True).order_by("pk").first()
        or users.filter(groups__name=Role.ADMIN.value).order_by("pk").first()
    )


def _source_check(*, source: Path, source_name: str, csv_path: Path | None) -> None:
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


def _batch_record(
    *,
    created_by: AbstractBaseUser,
    source_path: str,
    source_name: str,
    trusted: bool,
    case_from_folder: bool,
    csv_path: str,
    source_is_upload: bool,
    enqueue: bool,
) -> ImportBatch:
    with transaction.atomic():
        batch = ImportBatch.objects.create(
            requested_by=created_by,
            source_name=source_name[:255],
            source_path=source_path,
            csv_path=csv_path,
            source_is_upload=source_is_upload,
            trusted=trusted,
            case_from_folder=case_from_folder,
        )
        if enqueue:
            job_send_on_commit(job=batch, task=tasks.import_batch_process)
    return batch

"""Where an uploaded zip (and its CSV) waits until its batch has been imported: in the file storage under uploads/,
so the worker that imports it needs no disk shared with the web server."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile

UPLOADS_DIR = "uploads"


def upload_save_local(*, upload: UploadedFile, path: Path) -> None:
    """The upload in a local file of the web process, to check it before anything is stored."""
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)


def upload_store(*, path: Path, extension: str) -> str:
    """Put a checked upload into the storage under a fresh name; returns that name."""
    name = f"{UPLOADS_DIR}/{uuid.uuid4().hex}.{extension}"
    with path.open("rb") as handle:
        return default_storage.save(name, File(handle))


def upload_delete(*names: str) -> None:
    for name in names:
        if name and default_storage.exists(name):
            default_storage.delete(name)

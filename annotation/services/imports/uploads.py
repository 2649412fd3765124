"""Where an uploaded zip (and its CSV) waits under MEDIA_ROOT/uploads until its batch has been imported."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile


def upload_paths(*, with_csv: bool) -> tuple[Path, Path | None]:
    """Fresh paths for an upload's zip and (if there is one) its CSV; the folder is created on first use."""
    folder = Path(settings.MEDIA_ROOT) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    return folder / f"{token}.zip", folder / f"{token}.csv" if with_csv else None


def upload_save(*, upload: UploadedFile, path: Path) -> None:
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)


def upload_delete(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)

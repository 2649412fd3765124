"""Content-addressed file storage for cell images and thumbnails, on top of Django's default storage."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage

IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif"}


@dataclass(frozen=True)
class StagedBlob:
    """Bytes on their way to a content address: already written beside it under a temporary name, or not."""

    name: str
    data: bytes
    temp_path: Path | None = None


def image_storage_name(*, sha256: str, image_format: str) -> str:
    """Where an image with this content lives, relative to the storage root (MEDIA_ROOT)."""
    return f"images/{sha256[:2]}/{sha256}.{IMAGE_EXTENSIONS[image_format]}"


def thumbnail_storage_name(*, sha256: str) -> str:
    return f"thumbs/{sha256[:2]}/{sha256}.jpg"


def blob_stage(*, name: str, data: bytes) -> StagedBlob:
    """Write data beside its destination under a temporary name, so publishing it is a rename.

    Creating files is the slow part of storing them, and this step touches no shared state, so the
    import runs it on its decoding threads. Every staged blob must end in blob_publish or blob_discard.
    """
    if not isinstance(default_storage, FileSystemStorage):
        return StagedBlob(name=name, data=data)
    target = Path(default_storage.path(name))
    if target.exists():
        return StagedBlob(name=name, data=data)
    return StagedBlob(name=name, data=data, temp_path=_temp_write(target=target, data=data))


def blob_publish(*, staged: StagedBlob) -> None:
    """Put staged bytes at their name: rename the staged file, or write them now if none was staged."""
    if staged.temp_path is not None:
        os.replace(staged.temp_path, staged.temp_path.parent / Path(staged.name).name)
    else:
        blob_put(name=staged.name, data=staged.data)


def blob_discard(*, staged: StagedBlob) -> None:
    """Remove a staged file that was not published; a no-op once it has been."""
    if staged.temp_path is not None:
        staged.temp_path.unlink(missing_ok=True)


def blob_put(*, name: str, data: bytes) -> bool:
    """Store data under name unless it is already there; True if this call wrote it.

    Names are content addresses, so an existing file already holds these bytes. On a local disk the
    bytes go to a temporary file in the target folder and are renamed into place, so a reader (or a
    crash) never sees half a file.
    """
    storage = default_storage
    if not isinstance(storage, FileSystemStorage):
        # Object stores (S3) publish an object only once its upload completes.
        if storage.exists(name):
            return False
        storage.save(name, ContentFile(data))
        return True
    target = Path(storage.path(name))
    if target.exists():
        return False
    os.replace(_temp_write(target=target, data=data), target)
    return True


def blob_delete(*, name: str) -> None:
    if name and default_storage.exists(name):
        default_storage.delete(name)


def _temp_write(*, target: Path, data: bytes) -> Path:
    storage = default_storage
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        if storage.directory_permissions_mode is not None:
            target.parent.chmod(storage.directory_permissions_mode)
    # Not fsynced, like Django's own FileSystemStorage: the rename is atomic, durability is the disk's.
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
        # mkstemp creates the file 0600; the web process reading it may run as another user.
        os.chmod(temp_name, storage.file_permissions_mode or 0o644)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return Path(temp_name)

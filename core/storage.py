"""Files that web and workers exchange go through Django's storage API only: a local folder on one machine, an
S3-compatible bucket (django-storages) when web and workers run on different hosts. Nothing here assumes a disk that
another process can see.

Workers that need local files (PyTorch reads paths) copy stored files into a cache of their own host:
content-addressed names for single files, a SHA256SUMS manifest for a folder of files (a model version). Big downloads
are pre-signed redirects when the storage signs URLs (S3), else the caller streams them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage
from storages.backends.s3 import S3Storage

_logger = logging.getLogger(__name__)

MANIFEST = "SHA256SUMS"
CHUNK = 1024 * 1024
_lock = threading.Lock()
_trees_copied: dict[str, Path] = {}


class StoredTreeInvalid(OSError):
    """A stored folder's manifest is missing, or a file does not match its checksum."""


def storage_is_local() -> bool:
    """The storage is a folder of this host (`make run`, tests): its files can be opened by path where they lie."""
    return isinstance(default_storage, FileSystemStorage)


def scratch_dir() -> Path:
    """This host's folder for work files (HEMALOOP_CACHE_DIR, else the system's temporary folder), created on use."""
    folder = Path(settings.HEMALOOP_CACHE_DIR or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cache_root() -> Path:
    """This host's copies of stored files; never shared with another host, safe to delete when no task runs."""
    return scratch_dir() / "hemaloop-cache"


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"not a storage name: {name!r}")
    return path


def _download(*, name: str, target: Path) -> str:
    """Copy a stored file to target (atomically: a temp file renamed into place); returns its SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, default_storage.open(name, "rb") as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def storage_local_path(*, name: str) -> Path:
    """A local file holding the stored bytes of `name`: the file itself on local storage, else this host's copy.

    Only for names that change when their bytes do (images and thumbnails are named by SHA-256), so a copy is never
    stale.
    """
    if storage_is_local():
        return Path(default_storage.path(name))
    target = cache_root() / "files" / _safe_relative(name)
    if not target.is_file():
        _download(name=name, target=target)
    return target


@contextlib.contextmanager
def storage_temporary_copy(*, name: str) -> Iterator[Path]:
    """A local file with the stored bytes of `name` for the duration of the block (the stored file itself on local
    storage); for files read once, such as an uploaded zip, which a cache would only fill the disk with."""
    if storage_is_local():
        yield Path(default_storage.path(name))
        return
    folder = Path(tempfile.mkdtemp(prefix="hemaloop-copy-", dir=scratch_dir()))
    try:
        target = folder / PurePosixPath(name).name
        _download(name=name, target=target)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def storage_local_paths(*, names: list[str]) -> list[Path]:
    return [storage_local_path(name=name) for name in names]


def storage_tree_store(*, local_dir: Path, prefix: str) -> int:
    """Store every file under local_dir as prefix/<relative path>, then prefix/SHA256SUMS listing them.

    The manifest goes last: a reader that finds it finds every file. Returns how many files were stored.
    """
    lines = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(local_dir).as_posix()
        name = f"{prefix}/{relative}"
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
            handle.seek(0)
            _save_exact(name=name, content=File(handle))
        lines.append(f"{digest.hexdigest()}  {relative}\n")
    _save_exact(name=f"{prefix}/{MANIFEST}", content=File(_bytes_file("".join(lines).encode())))
    return len(lines)


def _bytes_file(data: bytes):
    handle = tempfile.SpooledTemporaryFile()
    handle.write(data)
    handle.seek(0)
    return handle


def _save_exact(*, name: str, content: File) -> None:
    # Storage.save picks another name when one is taken; these names are referenced from rows, so they must hold.
    if default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, content)
    if saved != name:
        raise OSError(f"storage stored {name} as {saved}")


def storage_tree_local(*, prefix: str) -> Path:
    """A local folder with the files stored under prefix, as its SHA256SUMS lists them, checked.

    On local storage, the folder itself. Elsewhere, a copy in this host's cache keyed by the manifest's own checksum,
    so a process downloads a model version once, and a changed version (a new manifest) is never served stale.
    """
    if storage_is_local():
        return Path(default_storage.path(prefix))
    known = _trees_copied.get(prefix)
    if known is not None and known.is_dir():
        return known  # stored folders never change under one prefix: no request to the object store per call
    manifest_name = f"{prefix}/{MANIFEST}"
    try:
        with default_storage.open(manifest_name, "rb") as handle:
            manifest = handle.read()
    except (FileNotFoundError, OSError) as exc:
        raise StoredTreeInvalid(f"{manifest_name} is missing from storage") from exc
    folder = cache_root() / "trees" / hashlib.sha256(manifest).hexdigest()
    if folder.is_dir():
        _trees_copied[prefix] = folder
        return folder
    with _lock:  # two threads of one process (gunicorn) asking at once download it once
        if folder.is_dir():
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".part-"))
        try:
            for expected, relative in _manifest_entries(manifest):
                got = _download(name=f"{prefix}/{relative}", target=staging / _safe_relative(relative))
                if got != expected:
                    raise StoredTreeInvalid(f"{prefix}/{relative} has SHA-256 {got}, the manifest says {expected}")
            try:
                os.rename(staging, folder)
            except OSError:  # another process of this host finished the same copy first
                if not folder.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _logger.info("copied %s from storage to %s", prefix, folder)
    _trees_copied[prefix] = folder
    return folder


def _manifest_entries(manifest: bytes) -> Iterator[tuple[str, str]]:
    for line in manifest.decode("utf-8").splitlines():
        if line.strip():
            digest, relative = line.split("  ", 1)
            yield digest, relative


def storage_tree_delete(*, prefix: str) -> int:
    """Delete every file stored under prefix (folders too, on local storage); returns how many files went."""
    removed = 0
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return 0
    for folder in folders:
        removed += storage_tree_delete(prefix=f"{prefix}/{folder}")
    for file in files:
        default_storage.delete(f"{prefix}/{file}")
        removed += 1
    if storage_is_local():
        shutil.rmtree(default_storage.path(prefix), ignore_errors=True)
    return removed


def storage_download_url(*, name: str, filename: str, content_type: str) -> str | None:
    """A short-lived pre-signed URL that downloads `name` as `filename`, when the storage signs URLs and redirects
    are on (HEMALOOP_DOWNLOAD_REDIRECT); None means: stream the bytes instead.

    The URL holds the storage name. Callers never hand one to a person the file's name must stay hidden from.
    """
    storage = default_storage
    if not settings.HEMALOOP_DOWNLOAD_REDIRECT or not isinstance(storage, S3Storage) or not storage.querystring_auth:
        return None
    parameters = {
        "ResponseContentDisposition": f'attachment; filename="{filename}"',
        "ResponseContentType": content_type,
    }
    return storage.url(name, parameters=parameters, expire=settings.HEMALOOP_DOWNLOAD_URL_SECONDS)

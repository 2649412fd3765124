"""The archive of a version: a deterministic zip in ImageFolder layout, written member by member in constant memory.

Layout: DATASHEET.md, taxonomy.json, manifest.csv, manifest.jsonl, images/<split>/<label>/<sha256>.<ext>
(in byte order of their paths), then SHA256SUMS. Every member is stored uncompressed with a fixed date and
mode: images are already compressed, and zlib's output may change between versions of the library, which
would break "the same version, the same bytes" years later.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import stat
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from celery.exceptions import SoftTimeLimitExceeded
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import transaction
from django.utils import timezone

from accounts.roles import Role, user_has_role
from releases import conf, selectors
from releases.models import DatasetArchive, DatasetVersion
from releases.services.datasheet import MANIFEST_COLUMNS_DOC, datasheet_render

FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
FILE_MODE = stat.S_IFREG | 0o644
CHUNK = 1 << 20
ROWS_PER_QUERY = 2000
TEXT_BUFFER = 1 << 16
PROGRESS_EVERY_S = 0.5
# Images are read and hashed on a thread ahead of the zip writer (file reads and SHA-256 release the GIL); at
# most PREFETCH_BYTES are in flight, and a file larger than PREFETCH_MAX_FILE is streamed by the writer. One
# thread, because a second one mostly fights the writer for the GIL (measured: 0.285 s vs 0.315 s for 3,000
# images on 2 cores).
READ_THREADS = 1
PREFETCH_BYTES = 8 * 1024 * 1024
PREFETCH_MAX_FILE = 4 * 1024 * 1024
# Finished bytes go to disk (and into the archive's hash) in steps of about this size.
COMMIT_STEP = 1024 * 1024
# A member growing past this (a large manifest) goes to disk before it is finished, so memory stays bounded.
SPILL_BYTES = 8 * 1024 * 1024
IMAGES_PER_READ = 16
# zipfile keeps one ZipInfo per member (about 400 bytes) for the central directory it writes at the end;
# past this many they wait in a temporary file, so memory does not grow with the number of images.
CENTRAL_DIRECTORY_BLOCK = 8192
MANIFEST_COLUMNS = tuple(name for name, _ in MANIFEST_COLUMNS_DOC)
# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ARCHIVE_FOLDER = "releases"
# One encoder for every manifest line (json.dumps with options would build a new one per line).
_JSONL_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

Status = DatasetArchive.Status


class ArchiveError(RuntimeError):
    """The archive cannot be built as published: a stored image changed, or a rebuild gave other bytes."""


@dataclass(frozen=True)
class ArchiveResult:
    sha256: str
    size_bytes: int
    members: int


MemberCallback = Callable[[int], None]


def archive_name(*, version: DatasetVersion) -> str:
    """Where the archive lives inside the media storage, and the name a download is saved under."""
    return f"{ARCHIVE_FOLDER}/hemaloop-dataset-v{version.number}.zip"


def archive_build_start(*, version: DatasetVersion, requested_by: AbstractBaseUser) -> DatasetArchive:
    """Queue the build of a version's archive, unless it is queued, building, or built and in storage."""
    if not user_has_role(requested_by, Role.RESEARCHER, Role.ADMIN):
        raise PermissionDenied("Only researchers and admins may build dataset archives.")
    with transaction.atomic():
        archive = DatasetArchive.objects.select_for_update().get(version=version)
        if archive.status in selectors.ARCHIVE_ACTIVE and not _stale(archive=archive):
            return archive
        if selectors.archive_downloadable(archive=archive):
            return archive
        archive.status = Status.PENDING
        archive.requested_by = requested_by
        archive.requested_at = timezone.now()
        archive.started_at = archive.finished_at = None
        archive.members_written = 0
        archive.members_total = version.image_count + 5
        archive.error = ""
        archive.save()
        # Imported here because the task module imports this one.
        from releases.tasks import dataset_archive_build

        transaction.on_commit(lambda: dataset_archive_build.delay(archive.pk))
    return archive


def archive_build(*, archive: DatasetArchive) -> DatasetArchive:
    """Write the archive to a temporary file and rename it into place; the task calls this.

    The first build publishes its SHA-256; any later build (the file was lost, or a task ran twice)
    must reproduce it exactly, or it fails and the published file is left alone.
    """
    archive = _build_begin(archive=archive)
    if archive.status != Status.RUNNING:
        return archive
    version = archive.version
    progress = _ProgressWriter(archive=archive)
    try:
        result = _archive_publish(version=version, name=archive_name(version=version), archive=archive,
                                  on_member=progress.member_written)
    except SoftTimeLimitExceeded:
        _build_finish(archive=archive, status=Status.FAILED, error="The build ran past its time limit.")
        raise
    except ArchiveError as exc:
        return _build_finish(archive=archive, status=Status.FAILED, error=str(exc))
    except Exception as exc:
        _build_finish(archive=archive, status=Status.FAILED, error=f"The build stopped on an internal error: {exc!r}")
        raise
    archive.file_name = archive_name(version=version)
    archive.sha256 = result.sha256
    archive.size_bytes = result.size_bytes
    archive.members_written = archive.members_total = result.members
    return _build_finish(archive=archive, status=Status.DONE, error="")


def archive_write(*, version: DatasetVersion, out: BinaryIO, on_member: MemberCallback | None = None) -> ArchiveResult:
    """Write the version's zip to `out`, a new file opened "w+b"; returns its SHA-256, size and member count.

    Memory stays bounded whatever the number of images: rows are read in chunks, images a few at a time,
    and the bytes of finished members go to disk as they are hashed. Each image is hashed while it is
    copied and must match the SHA-256 it was frozen with.
    """
    sink = _HashingSink(out)
    sums: list[tuple[str, str]] = []  # only the four text members; image sums come from the manifest
    count = 0

    def done(name: str, digest: str | None) -> None:
        nonlocal count
        if digest is not None:
            sums.append((digest, name))
        count += 1
        if zf.start_dir - sink.base >= COMMIT_STEP:
            sink.commit(zf.start_dir)
        if on_member is not None:
            on_member(count)

    with _CentralDirectory() as directory, zipfile.ZipFile(
        sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True
    ) as zf:
        zf.filelist = directory
        # Names are unique by construction (the SHA-256 is in each image's name): no index of them is kept.
        zf.NameToInfo = _NoNameIndex()
        for name, chunks in _text_members(version=version):
            done(name, _member_write_text(zf=zf, name=name, chunks=chunks))
        with _ImageReader() as reader:
            for image in reader.read_ahead(_image_rows(version=version)):
                _member_write_image(zf=zf, image=image)
                done(image.path, None)
        sums_lines = _sums_lines(version=version, text_sums=sums)
        done("SHA256SUMS", _member_write_text(zf=zf, name="SHA256SUMS", chunks=sums_lines))
    size = sink.finish()
    return ArchiveResult(sha256=sink.hexdigest(), size_bytes=size, members=count)


def manifest_csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading formula character gets a single quote before it."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


# --- members ----------------------------------------------------------------------------------------


def _member_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.create_system = 3  # Unix, whatever the building machine, so the mode bits below count
    info.external_attr = FILE_MODE << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def _member_write_text(*, zf: zipfile.ZipFile, name: str, chunks: Iterable[str]) -> str:
    digest = hashlib.sha256()
    with zf.open(_member_info(name), "w") as member:
        for chunk in _buffered(chunks):
            data = chunk.encode("utf-8")
            digest.update(data)
            member.write(data)
    return digest.hexdigest()


def _member_write_image(*, zf: zipfile.ZipFile, image: _Image) -> None:
    """One image member; its bytes must still have the SHA-256 the version froze (hashed while copied)."""
    with zf.open(_member_info(image.path), "w") as member:
        if image.data is not None:
            digest = image.digest
            member.write(image.data)
        else:
            hashed = hashlib.sha256()
            with _image_open(image.file_name, sha256=image.sha256) as source:
                while chunk := source.read(CHUNK):
                    hashed.update(chunk)
                    member.write(chunk)
            digest = hashed.hexdigest()
    if digest != image.sha256:
        raise ArchiveError(
            f"The stored file {image.file_name} no longer has the SHA-256 {image.sha256} it was frozen with."
        )


def _image_open(file_name: str, *, sha256: str) -> BinaryIO:
    try:
        return default_storage.open(file_name, "rb")
    except FileNotFoundError:
        raise ArchiveError(f"The image {sha256} is missing from storage ({file_name}).") from None


def _image_read_local(*, root: str, file_name: str, sha256: str) -> bytes:
    """The whole file, read with one open and no Django storage layer (a third of the time per small image)."""
    if file_name.startswith("/") or ".." in file_name:
        # Never produced by the import; let the storage's own path checks refuse it.
        with _image_open(file_name, sha256=sha256) as source:
            return source.read()
    try:
        with open(os.path.join(root, file_name), "rb", buffering=0) as source:
            return source.readall()
    except FileNotFoundError:
        raise ArchiveError(f"The image {sha256} is missing from storage ({file_name}).") from None


@dataclass
class _Image:
    path: str  # member name
    sha256: str
    file_name: str  # in the storage
    size: int
    data: bytes | None = None  # read ahead, with its digest; None: the writer streams the file itself
    digest: str = ""


class _ImageReader:
    """Reads (and hashes) the next images on a few threads while the writer copies the current one.

    Only for a local file system: object-store clients are not all safe to share between threads, so
    there each image is streamed by the writer.
    """

    def __init__(self) -> None:
        local = isinstance(default_storage, FileSystemStorage)
        self.root = default_storage.location if local else ""
        self.pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="archive") if local else None

    def __enter__(self) -> _ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def read_ahead(self, images: Iterable[_Image]) -> Iterator[_Image]:
        """The images in their order, each with its bytes read already where it is small enough."""
        if self.pool is None:
            yield from images
            return
        window: deque[tuple[Future[list[_Image]], int]] = deque()
        in_flight = 0
        for batch in _read_batches(images):
            size = sum(image.size for image in batch)
            large = batch[0].size > PREFETCH_MAX_FILE
            while window and (large or in_flight + size > PREFETCH_BYTES):
                future, done_size = window.popleft()
                in_flight -= done_size
                yield from future.result()
            if large:
                yield from batch
            else:
                window.append((self.pool.submit(_images_read, batch, root=self.root), size))
                in_flight += size
        while window:
            yield from window.popleft()[0].result()


def _read_batches(images: Iterable[_Image]) -> Iterator[list[_Image]]:
    """Consecutive small images in groups (one task per group, not per image); a large image alone."""
    batch: list[_Image] = []
    for image in images:
        if image.size > PREFETCH_MAX_FILE:
            if batch:
                yield batch
                batch = []
            yield [image]
            continue
        batch.append(image)
        if len(batch) == IMAGES_PER_READ:
            yield batch
            batch = []
    if batch:
        yield batch


def _images_read(images: list[_Image], *, root: str) -> list[_Image]:
    for image in images:
        image.data = _image_read_local(root=root, file_name=image.file_name, sha256=image.sha256)
        image.digest = hashlib.sha256(image.data).hexdigest()
    return images


def _buffered(chunks: Iterable[str]) -> Iterator[str]:
    """Join small pieces of text, so each zip write (CRC, file write) handles about 64 KiB."""
    pending: list[str] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= TEXT_BUFFER:
            yield "".join(pending)
            pending, size = [], 0
    if pending:
        yield "".join(pending)


def _text_members(*, version: DatasetVersion) -> Iterator[tuple[str, Iterable[str]]]:
    parent_diff = selectors.version_diff(old=version.parent, new=version) if version.parent_id else None
    datasheet = datasheet_render(
        version=version,
        balance=selectors.version_balance(version=version),
        leakage=selectors.version_leakage(version=version),
        label_summary=selectors.version_label_summary(version=version),
        parent_diff=parent_diff,
    )
    yield "DATASHEET.md", [datasheet]
    yield "taxonomy.json", [_json_document({"version": version.name, "classes": version.taxonomy})]
    yield "manifest.csv", _manifest_csv_lines(version=version)
    yield "manifest.jsonl", (
        _JSONL_ENCODER.encode(dict(zip(MANIFEST_COLUMNS, row, strict=True))) + "\n"
        for row in _manifest_rows(version=version)
    )


def _json_document(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def _manifest_rows(*, version: DatasetVersion) -> Iterator[tuple]:
    rows = selectors.manifest_entries(version=version).values_list(
        "split", "label", "sha256", "extension", "method", "expert_labels", "case_id"
    )
    for split, label, sha256, extension, method, expert_labels, case_id in rows.iterator(chunk_size=ROWS_PER_QUERY):
        path = f"images/{split}/{label}/{sha256}.{extension}"
        yield path, sha256, split, label, method, expert_labels, case_id


def _manifest_csv_lines(*, version: DatasetVersion) -> Iterator[str]:
    buffer = io.StringIO()
    # RFC 4180 line ends: with them the csv module also quotes a lone CR inside a cell, which "\n" would not.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)
    for path, sha256, split, label, method, expert_labels, case_id in _manifest_rows(version=version):
        # The path starts with "images/", the hash is hex and the count a number: only text cells need escaping.
        writer.writerow((path, sha256, manifest_csv_cell(split), manifest_csv_cell(label), manifest_csv_cell(method),
                         expert_labels, manifest_csv_cell(case_id)))
        if buffer.tell() >= TEXT_BUFFER:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _image_rows(*, version: DatasetVersion) -> Iterator[_Image]:
    rows = selectors.manifest_entries(version=version).values_list(
        "split", "label", "sha256", "extension", "image__file", "image__size_bytes"
    )
    for split, label, sha256, extension, file_name, size in rows.iterator(chunk_size=ROWS_PER_QUERY):
        yield _Image(path=f"images/{split}/{label}/{sha256}.{extension}", sha256=sha256, file_name=file_name, size=size)


def _sums_lines(*, version: DatasetVersion, text_sums: list[tuple[str, str]]) -> Iterator[str]:
    """`sha256sum -c` format, in member order. An image's name is its SHA-256, verified when it was written."""
    for digest, name in text_sums:
        yield f"{digest}  {name}\n"
    for image in _image_rows(version=version):
        yield f"{image.sha256}  {image.path}\n"


class _HashingSink:
    """The file object zipfile writes to: it holds the unfinished end of the archive in memory.

    zipfile writes a member's local header, its data, then seeks back to fill the header in (CRC and
    sizes). Here that seek costs no system call, and each finished byte is hashed exactly once, in
    order, on its way to disk: no second pass over the archive. A member that grows past SPILL_BYTES
    (a manifest of a very large version) is written to disk early, and its bytes are read back for the
    hash once zipfile has finished it, so memory stays bounded.
    """

    def __init__(self, out: BinaryIO) -> None:
        out.flush()
        self.fd = out.fileno()
        self.digest = hashlib.sha256()
        self.buffer = bytearray()  # the bytes from `base` to the end of the archive so far
        self.base = 0  # everything before is on disk
        self.hashed = 0  # everything before is in the digest (== base unless a member was spilled)
        self.pos = 0

    @property
    def end(self) -> int:
        return self.base + len(self.buffer)

    # -- the file API zipfile uses

    def write(self, data: bytes) -> int:
        size = len(data)
        if self.pos == self.base + len(self.buffer):  # appending: all but the header fill-ins
            self.buffer += data
            self.pos += size
            if len(self.buffer) > SPILL_BYTES:
                self._spill()
            return size
        view = memoryview(data)
        if self.pos < self.base:
            # Filling in the header of a spilled member: that part is on disk already.
            on_disk = view[: self.base - self.pos]
            _pwrite_all(self.fd, on_disk, self.pos)
            self.pos += len(on_disk)
            view = view[len(on_disk):]
        offset = self.pos - self.base
        self.buffer[offset:offset + len(view)] = view
        self.pos += len(view)
        return size

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self.pos = offset
        elif whence == os.SEEK_CUR:
            self.pos += offset
        else:
            self.pos = self.end + offset
        return self.pos

    def flush(self) -> None:
        """Nothing to do: bytes reach the disk in commit(), once they are final."""

    # -- ours

    def commit(self, upto: int) -> None:
        """Every byte before `upto` is final: hash it and write it out."""
        if self.hashed < self.base:
            self._hash_from_disk(min(upto, self.base))
        if upto > self.base:
            final = memoryview(self.buffer)[: upto - self.base]
            self.digest.update(final)
            _pwrite_all(self.fd, final, self.base)
            final.release()
            del self.buffer[: upto - self.base]
            self.base = self.hashed = upto

    def finish(self) -> int:
        end = self.end
        self.commit(end)
        return end

    def hexdigest(self) -> str:
        return self.digest.hexdigest()

    def _spill(self) -> None:
        _pwrite_all(self.fd, memoryview(self.buffer), self.base)
        self.base += len(self.buffer)
        self.buffer.clear()

    def _hash_from_disk(self, upto: int) -> None:
        while self.hashed < upto:
            chunk = os.pread(self.fd, min(CHUNK, upto - self.hashed), self.hashed)
            if not chunk:
                raise ArchiveError("The archive file was truncated while it was being written.")
            self.digest.update(chunk)
            self.hashed += len(chunk)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class _CentralDirectory:
    """Stands in for ZipFile.filelist, the ZipInfo of every member written so far, which zipfile appends
    to and reads back once, in order, to write the central directory at close. Past
    CENTRAL_DIRECTORY_BLOCK members the ZipInfos are pickled to a private temporary file in blocks."""

    def __init__(self) -> None:
        self.block: list[zipfile.ZipInfo] = []
        self.spool: BinaryIO | None = None
        self.spooled_blocks = 0
        self.count = 0

    def __enter__(self) -> _CentralDirectory:
        return self

    def __exit__(self, *exc) -> None:
        if self.spool is not None:
            self.spool.close()

    def append(self, info: zipfile.ZipInfo) -> None:
        self.block.append(info)
        self.count += 1
        if len(self.block) >= CENTRAL_DIRECTORY_BLOCK:
            if self.spool is None:
                self.spool = tempfile.TemporaryFile(prefix="hemaloop-zipdir-")
            pickle.dump(self.block, self.spool, protocol=pickle.HIGHEST_PROTOCOL)
            self.spooled_blocks += 1
            self.block = []

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[zipfile.ZipInfo]:
        if self.spool is not None:
            self.spool.seek(0)
            for _ in range(self.spooled_blocks):
                yield from pickle.load(self.spool)  # noqa: S301 - our own private temporary file
        yield from self.block


class _NoNameIndex(dict):
    """Stands in for ZipFile.NameToInfo, which zipfile only fills (and checks for duplicate names) while writing."""

    def __setitem__(self, key, value) -> None:
        pass


# --- build state and publishing -----------------------------------------------------------------------


class _ProgressWriter:
    """Saves members_written about twice a second, so the page's progress bar moves without a write per image."""

    def __init__(self, *, archive: DatasetArchive) -> None:
        self.archive_id = archive.pk
        self.saved_at = 0.0

    def member_written(self, count: int) -> None:
        now = time.monotonic()
        if now - self.saved_at >= PROGRESS_EVERY_S:
            DatasetArchive.objects.filter(pk=self.archive_id).update(members_written=count)
            self.saved_at = now


def _stale(*, archive: DatasetArchive) -> bool:
    """A queued or running build older than the task's hard time limit: its worker is gone."""
    since = archive.started_at or archive.requested_at
    return since is None or timezone.now() - since > timedelta(seconds=conf.archive_time_limit_s() + 300)


def _build_begin(*, archive: DatasetArchive) -> DatasetArchive:
    with transaction.atomic():
        archive = DatasetArchive.objects.select_for_update(of=("self",)).select_related("version__parent").get(
            pk=archive.pk
        )
        if selectors.archive_downloadable(archive=archive):
            # A task delivered twice, or a build requested while one finished: nothing to do.
            if archive.status != Status.DONE:
                archive.status = Status.DONE
                archive.save(update_fields=["status"])
            return archive
        archive.status = Status.RUNNING
        archive.started_at = timezone.now()
        archive.finished_at = None
        archive.members_written = 0
        archive.members_total = archive.version.image_count + 5
        archive.error = ""
        archive.save(update_fields=["status", "started_at", "finished_at", "members_written", "members_total", "error"])
    return archive


def _build_finish(*, archive: DatasetArchive, status: str, error: str) -> DatasetArchive:
    archive.status = status
    archive.error = error
    archive.finished_at = timezone.now()
    archive.save(update_fields=[
        "status", "error", "finished_at", "file_name", "sha256", "size_bytes", "members_written", "members_total",
    ])  # fmt: skip
    return archive


def _archive_publish(*, version: DatasetVersion, name: str, archive: DatasetArchive,
                     on_member: MemberCallback) -> ArchiveResult:
    """Build into a temporary file beside the destination, check it, then rename it into place."""
    storage = default_storage
    local = isinstance(storage, FileSystemStorage)
    folder = Path(storage.path(name)).parent if local else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".zip")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "w+b") as out:
            result = archive_write(version=version, out=out, on_member=on_member)
        if archive.sha256 and result.sha256 != archive.sha256:
            raise ArchiveError(
                f"The rebuilt archive has SHA-256 {result.sha256}, not the published {archive.sha256}; "
                "the published archive was left as it was."
            )
        if local:
            # mkstemp creates the file 0600; the web process that streams it may run as another user.
            temp_path.chmod(storage.file_permissions_mode or 0o644)
            os.replace(temp_path, storage.path(name))
        else:
            if storage.exists(name):
                storage.delete(name)
            with temp_path.open("rb") as built:
                storage.save(name, File(built))
    finally:
        temp_path.unlink(missing_ok=True)
    return result

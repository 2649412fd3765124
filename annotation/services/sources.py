"""Import sources (a folder or a zip archive) listed and read member by member, never extracted wholesale."""

from __future__ import annotations

import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from annotation.services.validation import (
    FileRejected,
    ImportLimits,
    entry_is_companion,
    entry_name_problem,
    megabytes,
)

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


class SourceInvalid(Exception):
    """The source as a whole cannot be imported (bad zip, too many entries, too large); fails the batch."""


@dataclass(frozen=True)
class SourceEntry:
    name: str  # "/"-separated path inside the source, as the report shows it
    size: int  # declared (zip) or on-disk size
    problem: str = ""  # set when the entry is rejected without being read
    ref: zipfile.ZipInfo | Path | None = None


@dataclass
class Source:
    entries: list[SourceEntry]
    skipped: int
    is_archive: bool
    _zip: zipfile.ZipFile | None = field(default=None, repr=False)

    def read(self, entry: SourceEntry, *, limit: int) -> bytes:
        """The entry's bytes, never more than limit of them; FileRejected when too large or unreadable."""
        if entry.size > limit:
            raise FileRejected(f"file is {megabytes(entry.size)}, larger than the limit of {megabytes(limit)}")
        return self._zip_read(entry) if self._zip is not None else _file_read(entry, limit=limit)

    def _zip_read(self, entry: SourceEntry) -> bytes:
        assert self._zip is not None
        assert isinstance(entry.ref, zipfile.ZipInfo)
        try:
            # zipfile stops at the declared size and checks the CRC at the end, so a member that lies
            # about its size fails here instead of inflating without bound.
            with self._zip.open(entry.ref) as member:
                data = member.read(entry.size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            raise FileRejected(f"unreadable archive member: {exc}") from None
        if len(data) != entry.size:
            raise FileRejected(f"archive member is {len(data)} bytes but declares {entry.size}")
        return data


@contextmanager
def source_open(*, path: Path, limits: ImportLimits) -> Iterator[Source]:
    """Open a folder or zip archive and list its files; SourceInvalid when it cannot be imported at all."""
    if path.is_dir():
        yield _folder_list(root=path)
        return
    if not path.is_file():
        raise SourceInvalid(f"the source {path.name} no longer exists")
    with path.open("rb") as fp:
        declared = _zip_entry_count(fp)
        if declared is None:
            raise SourceInvalid("the file is not a zip archive (no end-of-archive record)")
        # Checked before zipfile reads the central directory: millions of entries would cost gigabytes.
        if declared > limits.max_entries:
            raise SourceInvalid(f"the archive has {declared:,} entries, more than the limit of {limits.max_entries:,}")
        try:
            archive = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
            raise SourceInvalid(f"the zip archive is corrupt: {exc}") from None
        with archive:
            yield _zip_list(archive=archive, limits=limits)


def _zip_list(*, archive: zipfile.ZipFile, limits: ImportLimits) -> Source:
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise SourceInvalid(f"the archive has {len(infos):,} entries, more than the limit of {limits.max_entries:,}")
    declared_total = sum(info.file_size for info in infos)
    if declared_total > limits.max_total_bytes:
        raise SourceInvalid(
            f"the archive expands to {megabytes(declared_total)}, more than the limit of "
            f"{megabytes(limits.max_total_bytes)}"
        )
    entries: list[SourceEntry] = []
    skipped = 0
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        problem = entry_name_problem(name) or ""
        mode = info.external_attr >> 16
        if not problem and stat.S_ISLNK(mode):
            problem = "symbolic link in archive: links are not followed"
        elif not problem and info.flag_bits & 0x1:
            problem = "encrypted archive member"
        elif not problem and entry_is_companion(name):
            skipped += 1
            continue
        entries.append(SourceEntry(name=name, size=info.file_size, problem=problem, ref=info))
    return Source(entries=entries, skipped=skipped, is_archive=True, _zip=archive)


def _folder_list(*, root: Path) -> Source:
    entries: list[SourceEntry] = []
    skipped = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as scan:
            children = sorted(scan, key=lambda child: child.name)
        subfolders = []
        for child in children:
            name = Path(child.path).relative_to(root).as_posix()
            if entry_is_companion(name):
                skipped += 1
            elif child.is_symlink():
                # A link could point anywhere on the server (/etc, another user's media).
                entries.append(SourceEntry(name=name, size=0, problem="symbolic link: links are not followed"))
            elif child.is_dir(follow_symlinks=False):
                subfolders.append(Path(child.path))
            elif child.is_file(follow_symlinks=False):
                size = child.stat(follow_symlinks=False).st_size
                entries.append(SourceEntry(name=name, size=size, ref=Path(child.path)))
            else:
                entries.append(SourceEntry(name=name, size=0, problem="not a regular file"))
        stack.extend(reversed(subfolders))
    entries.sort(key=lambda entry: entry.name)
    return Source(entries=entries, skipped=skipped, is_archive=False)


def _file_read(entry: SourceEntry, *, limit: int) -> bytes:
    assert isinstance(entry.ref, Path)
    try:
        # O_NOFOLLOW: the file was not a link when listed, and must not have become one since.
        fd = os.open(entry.ref, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise FileRejected(f"cannot open file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fp:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRejected("not a regular file")
        if info.st_size > limit:
            raise FileRejected(f"file is {megabytes(info.st_size)}, larger than the limit of {megabytes(limit)}")
        # Sized reads: read(limit) would allocate the whole limit for every small file.
        data = fp.read(info.st_size + 1)
    if len(data) != info.st_size:
        raise FileRejected("the file changed while it was being read")
    return data


def _zip_entry_count(fp: BinaryIO) -> int | None:
    """Entries declared by the end-of-central-directory record (zip64 aware), without reading the directory."""
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    tail_size = min(size, 22 + 65535)  # the record plus the longest possible archive comment
    fp.seek(size - tail_size)
    tail = fp.read(tail_size)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        return None
    (entries,) = struct.unpack_from("<H", tail, pos + 10)
    # Like zipfile, expect the zip64 record (56 bytes) and its locator (20) right before the classic record.
    eocd_offset = size - tail_size + pos
    if eocd_offset >= 76:
        fp.seek(eocd_offset - 76)
        block = fp.read(76)
        if block[:4] == _ZIP64_EOCD and block[56:60] == _ZIP64_LOCATOR:
            (entries,) = struct.unpack_from("<Q", block, 32)
    return entries

"""Plumbing under Python's zipfile for large, byte-reproducible archives: hashed on the way to disk, in bounded memory.

zipfile writes a member's local header, then its data, then seeks back to fill in the header (CRC and sizes),
and keeps one ZipInfo per member for the central directory it writes at close. HashingSink absorbs the seeks in
memory and hashes every final byte once, in order, on its way to disk; CentralDirectory keeps the ZipInfos in a
temporary file past a few thousand members. Neither changes a byte of what zipfile writes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
FILE_MODE = stat.S_IFREG | 0o644
READ_BACK_CHUNK = 1 << 20
# Unfinished bytes held in memory at most. A member growing past this (a manifest, the central directory)
# goes to disk before zipfile has filled in its header, and is read back for the hash once it is finished:
# a cheap read from the page cache that keeps memory flat however many images there are.
SPILL_BYTES = 512 * 1024
# ZipInfos kept in memory (about 400 bytes each) before they are pickled to a temporary file in a block.
CENTRAL_DIRECTORY_BLOCK = 8192


class ZipStreamError(RuntimeError):
    """The archive file changed under the writer (it was truncated while being written)."""


def member_info(name: str) -> zipfile.ZipInfo:
    """A stored (uncompressed) member with a fixed date and mode, whatever machine builds it."""
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.create_system = 3  # Unix, so the mode bits below count
    info.external_attr = FILE_MODE << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def zip_open(*, sink: HashingSink, directory: CentralDirectory) -> zipfile.ZipFile:
    """A ZipFile writing stored members to `sink`, keeping its central directory in `directory`."""
    zf = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
    zf.filelist = directory  # type: ignore[assignment]
    # Member names must be unique by construction: zipfile's index of them (only used to warn about a
    # duplicate while writing) would grow with every member.
    zf.NameToInfo = _NoNameIndex()
    return zf


class HashingSink:
    """The file object zipfile writes to. It holds the unfinished end of the archive in memory, so zipfile's
    seek back into a member costs no system call; commit() hashes the finished bytes and writes them out (no
    second pass over the archive)."""

    def __init__(self, out: BinaryIO) -> None:
        out.flush()
        self.fd = out.fileno()
        self.digest = hashlib.sha256()
        self.buffer = bytearray()  # the bytes from `base` to the end of the archive so far
        self.base = 0  # everything before is on disk
        self.hashed = 0  # everything before is in the digest (== base unless a member was spilled)
        self.pos = 0
        self.end = 0  # == base + len(buffer)

    # -- the file API zipfile uses

    def write(self, data: bytes) -> int:
        if self.pos == self.end:  # appending: everything but the header fill-ins
            self.buffer += data
            self.pos = self.end = self.end + len(data)
            if self.end - self.base > SPILL_BYTES:
                self._spill()
            return len(data)
        return self._write_inside(data)

    def _write_inside(self, data: bytes) -> int:
        view = memoryview(data)
        if self.pos < self.base:
            # Filling in the header of a spilled member: that part is on disk already.
            on_disk = view[: self.base - self.pos]
            _pwrite_all(self.fd, on_disk, self.pos)
            self.pos += len(on_disk)
            view = view[len(on_disk) :]
        offset = self.pos - self.base
        self.buffer[offset : offset + len(view)] = view
        self.pos += len(view)
        self.end = self.base + len(self.buffer)
        return len(data)

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
        """Every byte before `upto` is final (zipfile will not seek back before it): hash it, write it out."""
        if self.hashed < self.base:
            self._hash_from_disk(min(upto, self.base))
        if upto > self.base:
            final = memoryview(self.buffer)[: upto - self.base]
            self.digest.update(final)
            _pwrite_all(self.fd, final, self.base)
            final.release()
            if upto == self.end:
                self.buffer = bytearray()  # a fresh one: deleting from the front would keep the capacity
            else:
                del self.buffer[: upto - self.base]
            self.base = self.hashed = upto

    def finish(self) -> tuple[str, int]:
        """(SHA-256, size) of the archive, once zipfile has closed it."""
        end = self.end
        self.commit(end)
        return self.digest.hexdigest(), end

    def _spill(self) -> None:
        _pwrite_all(self.fd, memoryview(self.buffer), self.base)
        self.base += len(self.buffer)
        self.buffer = bytearray()

    def _hash_from_disk(self, upto: int) -> None:
        while self.hashed < upto:
            chunk = os.pread(self.fd, min(READ_BACK_CHUNK, upto - self.hashed), self.hashed)
            if not chunk:
                raise ZipStreamError("The archive file was truncated while it was being written.")
            self.digest.update(chunk)
            self.hashed += len(chunk)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class CentralDirectory:
    """Stands in for ZipFile.filelist, the ZipInfo of every member written so far, which zipfile appends to
    and reads back once, in order, to write the central directory at close. Past CENTRAL_DIRECTORY_BLOCK
    members the ZipInfos are pickled to a private temporary file in blocks, so memory does not grow with
    the number of members."""

    def __init__(self) -> None:
        self.block: list[zipfile.ZipInfo] = []
        self.spool: BinaryIO | None = None
        self.spooled_blocks = 0
        self.count = 0

    def __enter__(self) -> CentralDirectory:
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
                yield from pickle.load(self.spool)  # noqa: S301 - our own private, unlinked temporary file
        yield from self.block


class _NoNameIndex(dict):
    """Stands in for ZipFile.NameToInfo, which zipfile only fills (and checks for duplicates) while writing."""

    def __setitem__(self, key, value) -> None:
        pass

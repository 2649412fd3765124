"""Each kind of bad input is rejected per file with a clear reason and leaves no row and no file behind."""

from __future__ import annotations

import struct
import zlib

import pytest

from annotation.models import CellImage, ImportBatch, ImportItem
from tests.helpers import folder_write, image_bytes, zip_write

pytestmark = pytest.mark.django_db

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"><circle cx="20" cy="15" r="9"/></svg>'


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims width×height pixels (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = image_bytes(seed=7, size=(200, 160))
    return data[: len(data) * 6 // 10]


BAD_FILES = [
    pytest.param("cells/truncated.jpg", truncated_jpeg(), "truncated image", id="truncated-jpeg"),
    pytest.param("cells/notes.jpg", b"patient 17, smear 2\n" * 20, "not a JPEG, PNG, BMP or TIFF", id="text-as-jpg"),
    pytest.param("cells/drawing.svg", SVG, "not a JPEG, PNG, BMP or TIFF", id="svg"),
    pytest.param("cells/drawing.jpg", SVG, "not a JPEG, PNG, BMP or TIFF", id="svg-as-jpg"),
    pytest.param("cells/bomb.png", png_declaring(100_000, 100_000), "decompression bomb", id="bomb-pillow-limit"),
    pytest.param("cells/bomb6k.png", png_declaring(6_000, 6_000), "decompression bomb", id="bomb-our-limit"),
    pytest.param("cells/real.gif", image_bytes(seed=12, image_format="GIF"), "not a JPEG, PNG, BMP or TIFF", id="gif"),
    pytest.param("cells/empty.jpg", b"", "empty file", id="empty"),
]


def _only_good_file_stored(batch: ImportBatch, stored_files) -> None:
    image = CellImage.objects.get()
    assert image.original_name == "good.jpg"
    assert stored_files() == {image.file, image.thumbnail}
    assert (batch.status, batch.imported, batch.rejected, batch.done, batch.total) == ("succeeded", 1, 1, 2, 2)


@pytest.mark.parametrize(("name", "data", "reason"), BAD_FILES)
def test_bad_image_in_a_folder_is_rejected_and_the_good_one_imported(
    run_import, stored_files, tmp_path, name, data, reason
):
    source = folder_write(tmp_path / "src", {name: data, "cells/good.jpg": image_bytes(seed=1)})

    batch = run_import(source)

    item = ImportItem.objects.get(outcome=ImportItem.Outcome.REJECTED)
    assert item.name == name
    assert reason in item.reason
    assert item.image is None
    _only_good_file_stored(batch, stored_files)


@pytest.mark.parametrize(("name", "data", "reason"), BAD_FILES)
def test_bad_image_in_a_zip_is_rejected_and_the_good_one_imported(
    run_import, stored_files, tmp_path, name, data, reason
):
    source = zip_write(tmp_path / "upload.zip", {name: data, "cells/good.jpg": image_bytes(seed=1)})

    batch = run_import(source)

    item = ImportItem.objects.get(outcome=ImportItem.Outcome.REJECTED)
    assert (item.name, reason in item.reason) == (name, True)
    _only_good_file_stored(batch, stored_files)


def test_decompression_bomb_is_rejected_before_decoding(run_import, tmp_path, settings):
    settings.HEMALOOP_IMPORT_MAX_PIXELS = 40 * 30 - 1
    source = folder_write(tmp_path / "src", {"big.jpg": image_bytes(seed=2, size=(40, 30))})

    run_import(source)

    item = ImportItem.objects.get()
    assert item.reason == "decompression bomb: 40×30 = 1,200 pixels, more than the limit of 1,199"


@pytest.mark.parametrize("container", ["folder", "zip"])
def test_oversized_file_is_rejected_with_the_limit(run_import, stored_files, tmp_path, settings, container):
    settings.HEMALOOP_IMPORT_MAX_FILE_BYTES = 2_000
    big = image_bytes(seed=3, size=(60, 60))
    assert len(big) > 2_000
    files = {"cells/big.jpg": big, "cells/good.jpg": image_bytes(seed=1, size=(8, 8))}
    source = folder_write(tmp_path / "src", files) if container == "folder" else zip_write(tmp_path / "u.zip", files)

    batch = run_import(source)

    item = ImportItem.objects.get(name="cells/big.jpg")
    assert item.outcome == ImportItem.Outcome.REJECTED
    assert "larger than the limit of 0.0 MB" in item.reason
    _only_good_file_stored(batch, stored_files)


def test_zip_entries_with_parent_or_absolute_paths_are_rejected(run_import, stored_files, tmp_path):
    good = image_bytes(seed=1)
    source = zip_write(
        tmp_path / "tricks.zip",
        {
            "../escape.jpg": image_bytes(seed=4),
            "cells/../../escape2.jpg": image_bytes(seed=5),
            "/etc/cron.d/evil.jpg": image_bytes(seed=6),
            "C:\\Windows\\evil.jpg": image_bytes(seed=8),
            "cells/good.jpg": good,
        },
    )

    batch = run_import(source)

    reasons = dict(ImportItem.objects.filter(outcome="rejected").values_list("name", "reason"))
    assert reasons == {
        "../escape.jpg": "unsafe path in archive: '..' is not allowed",
        "cells/../../escape2.jpg": "unsafe path in archive: '..' is not allowed",
        "/etc/cron.d/evil.jpg": "unsafe path in archive: absolute paths are not allowed",
        "C:\\Windows\\evil.jpg": "unsafe path in archive: absolute paths are not allowed",
    }
    assert not (tmp_path / "escape.jpg").exists()
    assert not list(tmp_path.rglob("escape*"))
    assert (batch.imported, batch.rejected) == (1, 4)
    assert len(stored_files()) == 2


def test_zip_symlink_entry_is_rejected_and_never_followed(run_import, stored_files, tmp_path):
    source = zip_write(
        tmp_path / "links.zip", {"cells/good.jpg": image_bytes(seed=1)}, symlinks={"cells/passwd.jpg": "/etc/passwd"}
    )

    batch = run_import(source)

    item = ImportItem.objects.get(outcome="rejected")
    assert (item.name, item.reason) == ("cells/passwd.jpg", "symbolic link in archive: links are not followed")
    _only_good_file_stored(batch, stored_files)


def test_folder_symlink_is_rejected_and_never_followed(run_import, stored_files, tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(image_bytes(seed=9))
    source = folder_write(tmp_path / "src", {"cells/good.jpg": image_bytes(seed=1)})
    (source / "cells" / "link.jpg").symlink_to(outside)

    batch = run_import(source)

    item = ImportItem.objects.get(outcome="rejected")
    assert (item.name, item.reason) == ("cells/link.jpg", "symbolic link: links are not followed")
    _only_good_file_stored(batch, stored_files)


def test_zip_member_that_lies_about_its_size_is_rejected(run_import, stored_files, tmp_path):
    files = {"cells/a.jpg": image_bytes(seed=11), "cells/good.jpg": image_bytes(seed=1)}
    source = zip_write(tmp_path / "lies.zip", files)
    raw = bytearray(source.read_bytes())
    # Halve the uncompressed size that the central directory declares for the first member.
    central = raw.find(b"PK\x01\x02")  # the central directory lists cells/a.jpg first
    (size,) = struct.unpack_from("<I", raw, central + 24)
    struct.pack_into("<I", raw, central + 24, size // 2)
    source.write_bytes(bytes(raw))

    batch = run_import(source)

    item = ImportItem.objects.get(outcome="rejected")
    assert item.name == "cells/a.jpg"
    assert "unreadable archive member" in item.reason or "declares" in item.reason
    _only_good_file_stored(batch, stored_files)


def test_hidden_files_and_text_companions_are_skipped_not_rejected(run_import, tmp_path):
    source = folder_write(
        tmp_path / "src",
        {
            "cells/good.jpg": image_bytes(seed=1),
            "README.md": b"# about",
            ".DS_Store": b"\0\0",
            "cells/._good.jpg": b"x",
        },
    )

    batch = run_import(source)

    assert (batch.total, batch.imported, batch.rejected, batch.skipped) == (1, 1, 0, 3)

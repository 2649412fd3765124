"""Metadata stripping: the decoded pixels are byte-identical, the metadata an analyzer may write is gone, and a
file that does not parse is refused, never passed on."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from annotation.services.metadata_strip import MetadataStripFailed, metadata_strip

SECRET = b"DI-60 pre-class: NEUTROPHIL_SEGMENTED"


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(image)


def _cell(mode: str = "RGB", size: tuple[int, int] = (37, 29)) -> Image.Image:
    rng = np.random.default_rng(7)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    shape = size[::-1] + ((channels,) if channels > 1 else ())
    return Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = SECRET.decode()  # ImageDescription
    exif[0x0110] = "CellaVision DM96"  # Model
    return exif.tobytes()


def _jpeg(**save) -> bytes:
    out = io.BytesIO()
    _cell().save(out, format="JPEG", quality=90, exif=_exif(), comment=SECRET, icc_profile=SECRET * 4, **save)
    return out.getvalue()


def _png(mode: str = "RGB") -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET.decode())
    info.add_text("class", SECRET.decode(), zip=True)
    info.add_itxt("Description", SECRET.decode())
    out = io.BytesIO()
    _cell(mode).save(out, format="PNG", pnginfo=info, exif=_exif(), dpi=(300, 300))
    return out.getvalue()


@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"restart_marker_blocks": 1}])
def test_jpeg_keeps_its_pixels_and_loses_exif_comment_and_icc(save):
    original = _jpeg(**save)
    assert SECRET in original

    stripped, extension = metadata_strip(data=original, image_format="JPEG")

    assert extension == "jpg"
    assert SECRET not in stripped
    assert b"CellaVision" not in stripped
    assert b"Exif" not in stripped
    assert np.array_equal(_pixels(stripped), _pixels(original))
    with Image.open(io.BytesIO(stripped)) as image:
        assert not image.getexif()
        assert "comment" not in image.info
        assert "icc_profile" not in image.info


def test_jpeg_entropy_coded_data_is_copied_not_re_encoded():
    original = _jpeg()
    stripped, _ = metadata_strip(data=original, image_format="JPEG")
    scan = original[original.index(b"\xff\xda") :]
    assert stripped.endswith(scan)


def test_jpeg_data_after_the_end_marker_is_dropped():
    stripped, _ = metadata_strip(data=_jpeg() + SECRET, image_format="JPEG")
    assert SECRET not in stripped
    assert stripped.endswith(b"\xff\xd9")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16"])
def test_png_keeps_its_pixels_and_loses_text_exif_and_time(mode):
    original = _png(mode)
    assert SECRET in original or zlib.compress(SECRET) in original or b"zTXt" in original

    stripped, extension = metadata_strip(data=original, image_format="PNG")

    assert extension == "png"
    for kind in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME", b"pHYs"):
        assert kind not in stripped
    assert SECRET not in stripped
    assert np.array_equal(_pixels(stripped), _pixels(original))
    # The compressed pixel data is copied as it was.
    assert original[original.index(b"IDAT") - 4 :].startswith(stripped[stripped.index(b"IDAT") - 4 : -12])


def test_png_chunk_of_an_unknown_kind_is_dropped():
    original = _png()
    body = b"vENd" + SECRET
    chunk = struct.pack(">I", len(SECRET)) + body + struct.pack(">I", zlib.crc32(body))
    spliced = original[:33] + chunk + original[33:]  # right after IHDR
    stripped, _ = metadata_strip(data=spliced, image_format="PNG")
    assert SECRET not in stripped
    assert b"vENd" not in stripped


@pytest.mark.parametrize("image_format", ["TIFF", "BMP"])
def test_tiff_and_bmp_are_rewritten_losslessly_as_png_without_tags(image_format):
    out = io.BytesIO()
    if image_format == "TIFF":
        _cell().save(out, format="TIFF", tiffinfo={270: SECRET.decode(), 305: "analyzer"}, compression="tiff_lzw")
    else:
        _cell().save(out, format="BMP")
    original = out.getvalue()

    stripped, extension = metadata_strip(data=original, image_format=image_format)

    assert extension == "png"
    assert stripped.startswith(b"\x89PNG")
    assert SECRET not in stripped
    assert b"analyzer" not in stripped
    assert np.array_equal(_pixels(stripped), _pixels(original))


def test_sixteen_bit_tiff_keeps_every_value():
    out = io.BytesIO()
    _cell("I;16").save(out, format="TIFF", tiffinfo={270: SECRET.decode()})
    stripped, _ = metadata_strip(data=out.getvalue(), image_format="TIFF")
    assert np.array_equal(_pixels(stripped).astype(np.int64), _pixels(out.getvalue()).astype(np.int64))


def _truncations():
    jpeg, png = _jpeg(), _png()
    scan = jpeg.index(b"\xff\xda")
    return [
        ("JPEG", jpeg[:-2]),  # no EOI
        ("JPEG", jpeg[: scan + 40]),  # inside the scan
        ("JPEG", jpeg[:20]),  # inside a segment
        ("JPEG", b"\xff\xd8\xff\xd9"),  # no scan at all
        ("JPEG", b"GIF89a" + jpeg),
        ("JPEG", b""),
        ("PNG", png[:-12]),  # no IEND
        ("PNG", png[:40]),
        ("PNG", png[:8]),
        ("PNG", png[:30] + b"\x00" + png[31:]),  # bad CRC in IHDR
        ("PNG", b"not a png"),
        ("TIFF", b"II*\x00" + b"\x00" * 10),
        ("BMP", b"BM" + b"\x00" * 10),
        ("GIF", b"GIF89a"),
    ]


@pytest.mark.parametrize(("image_format", "data"), _truncations())
def test_truncated_or_odd_files_are_refused(image_format, data):
    with pytest.raises(MetadataStripFailed):
        metadata_strip(data=data, image_format=image_format)


def test_a_cmyk_tiff_is_refused_rather_than_changed():
    out = io.BytesIO()
    _cell().convert("CMYK").save(out, format="TIFF")
    with pytest.raises(MetadataStripFailed):
        metadata_strip(data=out.getvalue(), image_format="TIFF")

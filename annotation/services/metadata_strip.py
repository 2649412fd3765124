"""Image bytes without metadata, for people who must not learn what an analyzer or a data set wrote into a file.

JPEG and PNG keep their compressed pixel data byte for byte: only the marker segments / chunks that decoders
need are copied (an allow-list, so an unknown segment is dropped, never passed on). BMP and TIFF are rewritten
losslessly as PNG: a TIFF's tags point into the file by offset, so deleting some is not safe without a full
rewrite, and BMP v4/v5 headers may carry an ICC profile or a linked profile's file name.

ICC profiles are dropped too (their description and copyright tags are free text a vendor writes); the pixels
are unchanged, at worst a non-sRGB image shows slightly different colours.

Anything that does not parse cleanly raises MetadataStripFailed: callers refuse to serve it rather than fall
back to the original bytes.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks a decoder needs for the pixels and their colours; all are fixed binary fields, no free text.
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"IDAT", b"IEND"})

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
# Tables and frame headers: DQT, DHT, DAC, DRI, DNL and every SOFn (C0-CF except DHT C4, JPG C8, DAC CC).
_JPEG_KEEP = frozenset({0xDB, 0xC4, 0xCC, 0xDD, 0xDC} | {m for m in range(0xC0, 0xD0) if m not in (0xC8,)})
_ADOBE_APP14 = 0xEE
_RST = range(0xD0, 0xD8)

# PIL modes that PNG stores without loss.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"})


class MetadataStripFailed(ValueError):
    """The file could not be parsed well enough to know that nothing but pixels is left."""


def metadata_strip(*, data: bytes, image_format: str) -> tuple[bytes, str]:
    """(bytes without metadata, extension "jpg" or "png") for a stored file of `image_format` (PIL's name)."""
    if image_format == "JPEG":
        return jpeg_strip(data), "jpg"
    if image_format == "PNG":
        return png_strip(data), "png"
    if image_format in ("TIFF", "BMP"):
        return png_rewrite(data, image_format=image_format), "png"
    raise MetadataStripFailed(f"no metadata stripping for {image_format!r}")


def jpeg_strip(data: bytes) -> bytes:
    """SOI, tables, frame and scan headers and the entropy-coded data as they were; APPn, COM and trailing data
    dropped (an Adobe APP14 stays when it is the plain 12-byte colour-transform record: decoders need it)."""
    if data[:2] != b"\xff\xd8":
        raise MetadataStripFailed("not a JPEG (no SOI marker)")
    out = bytearray(b"\xff\xd8")
    pos, end, scans = 2, len(data), 0
    while True:
        marker, pos = _jpeg_marker(data, pos)
        if marker == _EOI:
            if not scans:
                raise MetadataStripFailed("JPEG ends before any scan")
            out += b"\xff\xd9"
            return bytes(out)
        if marker == _SOI or marker in _RST or marker == 0x01:
            raise MetadataStripFailed(f"unexpected JPEG marker FF{marker:02X} between segments")
        if pos + 2 > end:
            raise MetadataStripFailed("truncated JPEG segment length")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > end:
            raise MetadataStripFailed("truncated JPEG segment")
        segment = data[pos : pos + length]
        pos += length
        if marker == _SOS:
            scan_end = _jpeg_scan_end(data, pos)
            out += bytes((0xFF, marker)) + segment + data[pos:scan_end]
            pos, scans = scan_end, scans + 1
        elif marker in _JPEG_KEEP:
            out += bytes((0xFF, marker)) + segment
        elif marker == _ADOBE_APP14 and length == 14 and segment[2:7] == b"Adobe":
            out += bytes((0xFF, marker)) + segment
        # else: APP0-APP15, COM, JPG extensions: dropped


def _jpeg_marker(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data) or data[pos] != 0xFF:
        raise MetadataStripFailed("truncated JPEG or garbage between segments")
    while pos < len(data) and data[pos] == 0xFF:  # fill bytes
        pos += 1
    if pos >= len(data):
        raise MetadataStripFailed("truncated JPEG marker")
    return data[pos], pos + 1


def _jpeg_scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data after an SOS header ends: the first marker that is not a stuffed 0xFF00,
    a restart marker or fill."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise MetadataStripFailed("truncated JPEG scan")
        following = data[pos + 1]
        if following == 0x00 or following in _RST:
            pos += 2
        elif following == 0xFF:
            pos += 1
        else:
            return pos


def png_strip(data: bytes) -> bytes:
    """The signature and the allow-listed chunks, each with its CRC checked; text, eXIf, tIME, iCCP, pHYs and any
    other chunk dropped, and nothing after IEND."""
    if data[:8] != _PNG_SIGNATURE:
        raise MetadataStripFailed("not a PNG (bad signature)")
    out = bytearray(_PNG_SIGNATURE)
    pos, first = 8, True
    while True:
        if pos + 12 > len(data):
            raise MetadataStripFailed("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk_end = pos + 12 + length
        if length > 0x7FFFFFFF or chunk_end > len(data):
            raise MetadataStripFailed("truncated PNG chunk")
        (crc,) = struct.unpack(">I", data[chunk_end - 4 : chunk_end])
        if zlib.crc32(data[pos + 4 : chunk_end - 4]) != crc:
            raise MetadataStripFailed(f"PNG chunk {kind!r} has a bad CRC")
        if first and kind != b"IHDR":
            raise MetadataStripFailed("PNG does not start with IHDR")
        first = False
        if kind in _PNG_KEEP:
            out += data[pos:chunk_end]
        pos = chunk_end
        if kind == b"IEND":
            return bytes(out)


def png_rewrite(data: bytes, *, image_format: str) -> bytes:
    """A TIFF or BMP decoded and written as PNG with no ancillary chunks; refused for modes PNG would not keep."""
    try:
        with Image.open(io.BytesIO(data), formats=(image_format,)) as image:
            image.load()
            if image.mode not in _PNG_MODES:
                raise MetadataStripFailed(f"{image_format} in mode {image.mode} cannot be rewritten without loss")
            out = io.BytesIO()
            # No pnginfo, icc_profile, exif or dpi: Pillow then writes only IHDR, PLTE/tRNS, IDAT and IEND.
            image.save(out, format="PNG", icc_profile=None, exif=b"")
    except MetadataStripFailed:
        raise
    except Exception as exc:  # hostile files make decoders raise almost anything
        raise MetadataStripFailed(f"{image_format} cannot be decoded: {type(exc).__name__}") from None
    # Belt and braces: whatever this Pillow writes, only the allow-listed chunks leave.
    return png_strip(out.getvalue())

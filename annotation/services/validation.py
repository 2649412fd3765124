"""Checks on untrusted import input: limits, archive member names, and image content (decoded, not by extension)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageFile, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF")
# Files that travel with image folders (notes, manifests, OS litter) are counted as skipped, not rejected.
COMPANION_SUFFIXES = (".csv", ".tsv", ".md", ".txt", ".json")
OS_LITTER = ("thumbs.db", "desktop.ini", "__macosx")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class FileRejected(Exception):
    """One file cannot be imported; the message is the reason shown in the batch report."""


@dataclass(frozen=True)
class ImportLimits:
    max_file_bytes: int
    max_pixels: int
    max_entries: int
    max_total_bytes: int
    max_csv_bytes: int
    max_upload_bytes: int
    thumbnail_px: int

    @classmethod
    def from_settings(cls) -> ImportLimits:
        return cls(
            max_file_bytes=settings.HEMALOOP_IMPORT_MAX_FILE_BYTES,
            max_pixels=settings.HEMALOOP_IMPORT_MAX_PIXELS,
            max_entries=settings.HEMALOOP_IMPORT_MAX_ENTRIES,
            max_total_bytes=settings.HEMALOOP_IMPORT_MAX_TOTAL_BYTES,
            max_csv_bytes=settings.HEMALOOP_IMPORT_MAX_CSV_BYTES,
            max_upload_bytes=settings.HEMALOOP_MAX_UPLOAD_BYTES,
            thumbnail_px=settings.HEMALOOP_THUMBNAIL_PX,
        )


@dataclass(frozen=True)
class ValidatedImage:
    format: str
    width: int
    height: int
    thumbnail_jpeg: bytes


def megabytes(size: int) -> str:
    return f"{size / 1024**2:.1f} MB"


def entry_name_problem(name: str) -> str | None:
    """Why an archive member name must not be used (absolute path, '..'), or None when it is safe."""
    path = name.replace("\\", "/")
    if path.startswith("/") or _WINDOWS_DRIVE.match(path):
        return "unsafe path in archive: absolute paths are not allowed"
    if ".." in path.split("/"):
        return "unsafe path in archive: '..' is not allowed"
    return None


def entry_is_companion(name: str) -> bool:
    """Hidden files, OS litter and text companions (README, CSV) are skipped without a report line."""
    parts = [part for part in name.replace("\\", "/").split("/") if part]
    if any(part.startswith(".") or part.lower() in OS_LITTER for part in parts):
        return True
    return parts[-1].lower().endswith(COMPANION_SUFFIXES)


def image_validate(*, data: bytes, limits: ImportLimits) -> ValidatedImage:
    """Decode the whole image and render its thumbnail; FileRejected says why a file is not a usable image."""
    if not data:
        raise FileRejected("empty file")
    if len(data) > limits.max_file_bytes:
        limit = megabytes(limits.max_file_bytes)
        raise FileRejected(f"file is {megabytes(len(data))}, larger than the limit of {limit}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Pillow would pad a truncated image with grey and call it valid.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False for imports")
    try:
        # Pillow raises DecompressionBombError itself beyond twice MAX_IMAGE_PIXELS; below that,
        # _header_check rejects by the declared size before a single pixel is decoded.
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as probe:
            image_format, (width, height) = _header_check(image=probe, limits=limits)
            probe.verify()
        # verify() leaves the image unusable, so decode a second, fresh instance in full.
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            image.load()
            thumbnail = thumbnail_render(image=image, size=limits.thumbnail_px)
    except FileRejected:
        raise
    except UnidentifiedImageError:
        raise FileRejected("not a JPEG, PNG, BMP or TIFF image (the content is not a recognised image)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FileRejected(f"decompression bomb: {exc}") from None
    except Exception as exc:  # hostile files make decoders raise almost anything
        if "truncated" in str(exc):
            raise FileRejected(f"truncated image: {exc}") from None
        raise FileRejected(f"corrupt image: {type(exc).__name__}: {exc}") from None
    return ValidatedImage(format=image_format, width=width, height=height, thumbnail_jpeg=thumbnail)


def _header_check(*, image: Image.Image, limits: ImportLimits) -> tuple[str, tuple[int, int]]:
    """Reject by what the header declares, before any pixel is decoded."""
    if image.format not in ACCEPTED_FORMATS:
        # JPEG variants such as MPO come back from the JPEG plugin under their own name.
        raise FileRejected(f"image format {image.format} is not accepted (JPEG, PNG, BMP or TIFF only)")
    width, height = image.size
    if width < 1 or height < 1:
        raise FileRejected(f"image declares an empty size {width}×{height}")
    # Never above Pillow's own threshold, so Pillow never warns (a warning is not a rejection).
    max_pixels = min(limits.max_pixels, Image.MAX_IMAGE_PIXELS or limits.max_pixels)
    if width * height > max_pixels:
        raise FileRejected(
            f"decompression bomb: {width}×{height} = {width * height:,} pixels, more than the limit of {max_pixels:,}"
        )
    if getattr(image, "n_frames", 1) > 1:
        raise FileRejected("multi-frame images (animations, multi-page TIFF) are not accepted")
    return image.format, (width, height)


def thumbnail_render(*, image: Image.Image, size: int) -> bytes:
    """A JPEG no larger than size×size; image must be loaded and is resized in place."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # Resampling refuses these modes; scale scientific 16-bit images to 8 bits rather than clip them.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    # A cheap 2×2 box reduction, then an antialiased bilinear resize: at 128 px it looks like bicubic
    # and costs half as much, which matters because every imported image passes here.
    image.thumbnail((size, size), resample=Image.Resampling.BILINEAR, reducing_gap=1.0)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()

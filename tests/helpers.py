"""Test data that is not a database row: real small images, zips and folders built member by member, the
demo image set, and the browser tests' password. Plain functions, imported by tests and fixtures alike."""

from __future__ import annotations

import csv
import io
import itertools
import random
import shutil
import stat
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo" / "pbc-sample"
DEMO_CLASSES = ("eosinophil", "lymphocyte", "neutrophil")
PASSWORD = "e2e-pass-4711-hemaloop"  # noqa: S105 - the browser tests type it into the login form

_variants = itertools.count(1)


def next_variant() -> int:
    """A number no other generated image of this session has, so generated images never collide."""
    return next(_variants)


def cell_png(*, variant: int, size: tuple[int, int] = (96, 96)) -> bytes:
    """A stained-cell look-alike (pink background, purple nucleus); `variant` makes the bytes unique."""
    image = Image.new("RGB", size, (236 - variant % 20, 206, 214))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.18, h * 0.18, w * 0.82, h * 0.82), fill=(214, 170, 196))
    offset = variant % 7
    draw.ellipse((w * 0.3 + offset, h * 0.28, w * 0.68 + offset, h * 0.7), fill=(104, 52, 140 + variant % 100))
    # The shapes repeat every 700 variants; the corner pixel spells the variant, so the bytes really are unique.
    image.putpixel((0, 0), (variant % 256, variant // 256 % 256, variant // 65536 % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_thumbnail(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((64, 64))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def image_bytes(*, seed: int, size: tuple[int, int] = (40, 30), image_format: str = "JPEG") -> bytes:
    """A small real image whose bytes differ per seed (noise, so no two seeds compress alike)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def zip_of_cells(*, count: int, bad_name: str | None = None, duplicate: bool = False) -> bytes:
    """A zip of `count` distinct real PNGs, optionally a byte-identical copy of the first one
    (a duplicate) and one file named like an image that is not one."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        pngs = [cell_png(variant=10_000 + next_variant()) for _ in range(count)]
        for index, data in enumerate(pngs):
            archive.writestr(f"cells/cell_{index:03d}.png", data)
        if duplicate:
            archive.writestr("cells/copy_of_cell_000.png", pngs[0])
        if bad_name:
            archive.writestr(f"cells/{bad_name}", b"this is not an image at all")
    return buffer.getvalue()


def zip_write(path: Path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> Path:
    """A zip with the given members stored under exactly these names (zipfile would not sanitise them)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, so the mode bits in external_attr count
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def folder_write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def demo_subset(*, target: Path, classes: tuple[str, ...] = DEMO_CLASSES) -> Path:
    """One image per (class, case) of the demo set: 12 cases, so every split of a version gets whole cases."""
    rows, seen = [], set()
    with (DEMO_DIR / "cases.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cell_class = row["file"].split("/")[0]
            if cell_class in classes and (cell_class, row["case_id"]) not in seen:
                seen.add((cell_class, row["case_id"]))
                rows.append(row)
    for row in rows:
        (target / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_DIR / row["file"], target / row["file"])
    with (target / "cases.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target

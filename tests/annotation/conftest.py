"""Fixtures for the import tests: a private MEDIA_ROOT, real image bytes, zips built member by member."""

from __future__ import annotations

import io
import random
import stat
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from PIL import Image

from annotation.models import ImportBatch
from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process

DEMO_DIR = Path(django_settings.BASE_DIR) / "demo" / "pbc-sample"


def image_bytes(*, seed: int, size: tuple[int, int] = (40, 30), image_format: str = "JPEG") -> bytes:
    """A small real image whose bytes differ per seed (noise, so no two seeds compress alike)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


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


def folder_write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """A MEDIA_ROOT of this test only, so 'no file was left behind' can be checked exactly."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def stored_files(media):
    """stored_files() -> every file under MEDIA_ROOT/images and /thumbs, relative to MEDIA_ROOT."""

    def files() -> set[str]:
        return {
            path.relative_to(media).as_posix()
            for folder in ("images", "thumbs")
            for path in (media / folder).rglob("*")
            if path.is_file()
        }

    return files


@pytest.fixture
def run_import(admin_user, media):
    """run_import(source, **options) -> the finished batch, processed in-process like the commands do."""

    def run(source: Path, **options) -> ImportBatch:
        batch = import_batch_create(
            created_by=admin_user, source=source, source_name=source.name, enqueue=False, **options
        )
        return import_batch_process(batch=batch)

    return run


@pytest.fixture
def demo_dir() -> Path:
    assert (DEMO_DIR / "NOTICE.md").is_file(), "demo/pbc-sample is part of the repository"
    return DEMO_DIR

"""Fixtures of the import tests: the files a test left in storage, an in-process import, the demo folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotation.models import ImportBatch
from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process
from tests.helpers import DEMO_DIR


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

"""Writes for releases: cutting dataset versions and building their archives (one module per concern)."""

from releases.services.archive import (  # noqa: F401
    ArchiveError,
    ArchiveResult,
    archive_build,
    archive_build_start,
    archive_name,
    archive_write,
    manifest_csv_cell,
)
from releases.services.versions import ReleaseEmpty, dataset_version_create, release_settings_get  # noqa: F401

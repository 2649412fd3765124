"""A stand-in for the import service where a test checks only how a page or the API calls it."""

from __future__ import annotations

from annotation.models import ImportBatch
from annotation.services.imports.batches import ImportRejected
from core.jobs import JobStatus
from tests.factories.annotation import ImportBatchFactory


class FakeImportService:
    """Stands in for import_batch_create_from_upload: records the calls and rejects uploads named reject*.zip
    with the real ImportRejected."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def import_batch_create_from_upload(
        self, *, created_by, upload, trusted=False, case_from_folder=False, csv_upload=None
    ) -> ImportBatch:
        self.calls.append(
            {
                "created_by": created_by,
                "upload_name": upload.name,
                "upload_bytes": upload.read(),
                "trusted": trusted,
                "case_from_folder": case_from_folder,
                "csv_name": csv_upload.name if csv_upload else None,
            }
        )
        if upload.name.startswith("reject"):
            raise ImportRejected("This file is not a zip archive.")
        return ImportBatchFactory(
            requested_by=created_by,
            source_name=upload.name,
            status=JobStatus.QUEUED,
            trusted=trusted,
            case_from_folder=case_from_folder,
        )

    def install(self, monkeypatch) -> FakeImportService:
        for module in ("annotation.views", "annotation.api.images"):
            monkeypatch.setattr(f"{module}.import_batch_create_from_upload", self.import_batch_create_from_upload)
        return self

"""`manage.py load_demo`: import demo/pbc-sample (180 PBC images, untrusted) once, as the first admin."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation.management.commands.import_cells import batch_report
from annotation.models import ImportBatch
from annotation.services.imports.batches import import_batch_create, importer_default
from annotation.services.imports.runner import import_batch_process
from core.jobs import JobStatus

DEMO_SOURCE_NAME = "demo"


def demo_dir() -> Path:
    return Path(settings.HEMALOOP_DEMO_DIR)


class Command(BaseCommand):
    help = "Import the demo sample of real PBC images (labels as reference labels only). Idempotent."

    def handle(self, *args, **options):
        if ImportBatch.objects.filter(source_name=DEMO_SOURCE_NAME, status=JobStatus.SUCCEEDED).exists():
            self.stdout.write("demo already loaded")
            return
        importer = importer_default()
        if importer is None:
            raise CommandError("No admin user exists: create one first (manage.py create_user).")
        folder = demo_dir()
        # Not trusted: the demo images must go through expert labeling like any new data.
        batch = import_batch_create(
            created_by=importer,
            source=folder,
            source_name=DEMO_SOURCE_NAME,
            csv_path=folder / "cases.csv",
            enqueue=False,
        )
        batch = import_batch_process(batch=batch)
        batch_report(batch=batch, stdout=self.stdout, verbosity=options["verbosity"])
        if batch.status == JobStatus.FAILED:
            raise CommandError(batch.error)

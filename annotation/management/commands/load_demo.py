"""`manage.py load_demo`: import demo/pbc-sample (180 PBC images) once, as the first admin: a third of the cells of
each class as trusted final labels (their reference labels, so the demo starts with a model worth asking), the rest
untrusted, to be labeled by the demo annotators."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation.management.commands.import_cells import batch_report
from annotation.models import ImportBatch
from annotation.services.imports.batches import import_batch_create, importer_default
from annotation.services.imports.runner import import_batch_process
from core.jobs import JobStatus

DEMO_SOURCE_NAME = "demo"
DEMO_TRUSTED_SOURCE_NAME = "demo-trusted"
TRUSTED_EVERY = 3  # every third cell of each class comes with its final label


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
        with tempfile.TemporaryDirectory(prefix="hemaloop-demo-") as tmp:
            trusted, untrusted = _split(demo_dir(), Path(tmp))
            if not ImportBatch.objects.filter(
                source_name=DEMO_TRUSTED_SOURCE_NAME, status=JobStatus.SUCCEEDED
            ).exists():
                self._import(importer, trusted, DEMO_TRUSTED_SOURCE_NAME, trusted=True, options=options)
            # Not trusted: these demo images go through expert labeling like any new data.
            self._import(importer, untrusted, DEMO_SOURCE_NAME, trusted=False, options=options)

    def _import(self, importer, folder: Path, source_name: str, *, trusted: bool, options) -> None:
        batch = import_batch_create(
            created_by=importer,
            source=folder,
            source_name=source_name,
            trusted=trusted,
            csv_path=folder / "cases.csv",
            enqueue=False,
        )
        batch = import_batch_process(batch=batch)
        batch_report(batch=batch, stdout=self.stdout, verbosity=options["verbosity"])
        if batch.status == JobStatus.FAILED:
            raise CommandError(batch.error)


def _split(folder: Path, target: Path) -> tuple[Path, Path]:
    """Copies of the demo folder's files in two folders with their cases.csv rows: every TRUSTED_EVERY-th cell of
    each class (in file order) and the rest."""
    with (folder / "cases.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    seen: dict[str, int] = {}
    parts: dict[str, list[dict]] = {"trusted": [], "untrusted": []}
    for row in sorted(rows, key=lambda r: r["file"]):
        cell_class = row["file"].split("/")[0]
        seen[cell_class] = seen.get(cell_class, 0) + 1
        parts["trusted" if seen[cell_class] % TRUSTED_EVERY == 1 else "untrusted"].append(row)
    for name, part in parts.items():
        for row in part:
            (target / name / row["file"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / row["file"], target / name / row["file"])
        with (target / name / "cases.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
    return target / "trusted", target / "untrusted"

"""`manage.py import_cells PATH`: import a folder or zip of cell images in-process (no worker needed)."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from annotation.models import ImportBatch, ImportItem
from annotation.services.imports.batches import import_batch_create, importer_default
from annotation.services.imports.runner import import_batch_process
from core.errors import AppError
from core.jobs import JobStatus


class Command(BaseCommand):
    help = "Import cell images from a folder or zip (flat, or ImageFolder <label>/<file>), with an optional CSV."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="folder or .zip of images")
        parser.add_argument(
            "--csv", type=Path, help="CSV with columns file, case_id, diagnosis, analyzer_class, reference_label"
        )
        parser.add_argument(
            "--case-from-folder",
            action="store_true",
            help="the folder holding each image is its case id (instead of its label)",
        )
        parser.add_argument(
            "--trusted",
            action="store_true",
            help="reference labels become final labels (only for expert-confirmed labels)",
        )
        parser.add_argument("--user", help="username of the importing admin (default: the first admin)")

    def handle(
        self, *args, path: Path, csv: Path | None, case_from_folder: bool, trusted: bool, user: str | None, **options
    ):
        importer = _importer(username=user)
        try:
            batch = import_batch_create(
                created_by=importer,
                source=path,
                source_name=path.name or str(path),
                trusted=trusted,
                case_from_folder=case_from_folder,
                csv_path=csv,
                enqueue=False,
            )
        except AppError as exc:  # refused: not an admin, or the source cannot be imported
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Import #{batch.pk} of {path} as {importer.get_username()}")
        batch = import_batch_process(batch=batch, on_progress=_progress_printer(self.stdout))
        batch_report(batch=batch, stdout=self.stdout, verbosity=options["verbosity"])
        if batch.status == JobStatus.FAILED:
            raise CommandError(batch.error)


def _importer(*, username: str | None):
    if username is None:
        importer = importer_default()
        if importer is None:
            raise CommandError("No admin user exists: create one (manage.py create_user) or pass --user.")
        return importer
    importer = get_user_model().objects.filter(username=username).first()
    if importer is None:
        raise CommandError(f"No user named {username!r}.")
    return importer


def _progress_printer(stdout: OutputWrapper):
    interactive = stdout.isatty()
    last_decile = -1

    def show(batch: ImportBatch) -> None:
        nonlocal last_decile
        decile = batch.done * 10 // batch.total if batch.total else 10
        # A terminal gets a live line; a log gets a line per 10% so it stays readable.
        if not interactive and decile == last_decile:
            return
        last_decile = decile
        stdout.write(
            f"  {batch.done}/{batch.total} files: {batch.imported} imported, "
            f"{batch.duplicates} duplicates, {batch.rejected} rejected",
            ending="\r" if interactive else "\n",
        )

    return show


def batch_report(*, batch: ImportBatch, stdout: OutputWrapper, verbosity: int = 1) -> None:
    """The summary and the files that were not imported, as both import commands print them."""
    stdout.write("")
    stdout.write(
        f"Import #{batch.pk} {batch.status}: {batch.total} files, {batch.imported} imported, "
        f"{batch.duplicates} duplicates, {batch.rejected} rejected, {batch.skipped} skipped (not images)"
    )
    if batch.error:
        stdout.write(f"Error: {batch.error}")
    outcomes = [ImportItem.Outcome.REJECTED]
    if verbosity > 1:
        outcomes.append(ImportItem.Outcome.DUPLICATE)
    for name, outcome, reason in batch.items.filter(outcome__in=outcomes).values_list("name", "outcome", "reason"):
        stdout.write(f"  {outcome}: {name}: {reason}")

"""Batch import of cell images from a folder, a zip or an upload: validated, content-addressed, reported per file."""

from __future__ import annotations

import copy
import hashlib
import os
import uuid
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from annotation.models import Case, CellClass, CellImage, ImportBatch, ImportItem, LabelEvent, LabelStatus
from annotation.services.metadata import FileMeta, ImportPlan, csv_rows_read, import_plan_build
from annotation.services.sources import Source, SourceEntry, SourceInvalid, source_open
from annotation.services.validation import FileRejected, ImportLimits, ValidatedImage, image_validate, megabytes
from annotation.storage import (
    StagedBlob,
    blob_delete,
    blob_discard,
    blob_publish,
    blob_stage,
    image_storage_name,
    thumbnail_storage_name,
)
from core.roles import Role, user_has_role

TRUSTED_IMPORT = "trusted_import"
FINISHED = (ImportBatch.Status.DONE, ImportBatch.Status.FAILED)
NAME_MAX = ImportItem._meta.get_field("name").max_length
ORIGINAL_NAME_MAX = CellImage._meta.get_field("original_name").max_length
LOOKUP_CHUNK = 32

ProgressCallback = Callable[[ImportBatch], None]


class ImportRejected(ValueError):
    """The upload or source cannot be imported at all; the message says why (a form error or a 400)."""


def import_batch_create(
    *,
    created_by: AbstractBaseUser,
    source: Path,
    source_name: str,
    trusted: bool = False,
    case_from_folder: bool = False,
    csv_path: Path | None = None,
    enqueue: bool = True,
) -> ImportBatch:
    """Check the source (a folder or a zip), record a pending batch and queue its processing.

    enqueue=False leaves the processing to the caller (the management commands run it in-process,
    so they work without a broker or worker).
    """
    _importer_check(user=created_by)
    return _batch_create(
        created_by=created_by,
        source=Path(source),
        source_name=source_name,
        trusted=trusted,
        case_from_folder=case_from_folder,
        csv_path=Path(csv_path) if csv_path is not None else None,
        source_is_upload=False,
        enqueue=enqueue,
    )


def import_batch_create_from_upload(
    *,
    created_by: AbstractBaseUser,
    upload: UploadedFile,
    trusted: bool = False,
    case_from_folder: bool = False,
    csv_upload: UploadedFile | None = None,
) -> ImportBatch:
    """Keep an uploaded zip (and CSV) under MEDIA_ROOT/uploads and queue its import."""
    _importer_check(user=created_by)
    limits = ImportLimits.from_settings()
    if upload.size is not None and upload.size > limits.max_upload_bytes:
        raise ImportRejected(
            f"The upload is {megabytes(upload.size)}, larger than the limit of {megabytes(limits.max_upload_bytes)}."
        )
    if not zipfile.is_zipfile(upload):
        raise ImportRejected(f"{upload.name} is not a zip archive.")
    if csv_upload is not None and csv_upload.size is not None and csv_upload.size > limits.max_csv_bytes:
        raise ImportRejected(f"The CSV is larger than the limit of {megabytes(limits.max_csv_bytes)}.")
    folder = Path(settings.MEDIA_ROOT) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    zip_path = folder / f"{token}.zip"
    csv_path = folder / f"{token}.csv" if csv_upload is not None else None
    try:
        _upload_save(upload=upload, path=zip_path)
        if csv_upload is not None and csv_path is not None:
            _upload_save(upload=csv_upload, path=csv_path)
        return _batch_create(
            created_by=created_by,
            source=zip_path,
            source_name=os.path.basename(upload.name or "upload.zip"),
            trusted=trusted,
            case_from_folder=case_from_folder,
            csv_path=csv_path,
            source_is_upload=True,
            enqueue=True,
        )
    except BaseException:
        _upload_delete(zip_path, csv_path)
        raise


def import_batch_process(*, batch: ImportBatch, on_progress: ProgressCallback | None = None) -> ImportBatch:
    """Import every file of the batch's source and leave the per-file report; the task calls this.

    The batch fails (status failed, error set) only when the source as a whole is invalid; single bad
    files are rejected in the report. A batch found running again (a redelivered task) resumes after
    the files it already reported.
    """
    batch = _batch_start(batch=batch)
    if batch.status in FINISHED:
        return batch
    run = _BatchRun(batch=batch, limits=ImportLimits.from_settings(), on_progress=on_progress)
    try:
        run.execute()
    except SourceInvalid as exc:
        return run.finish(status=ImportBatch.Status.FAILED, error=f"The whole import was rejected: {exc}.")
    except SoftTimeLimitExceeded:
        run.finish(
            status=ImportBatch.Status.FAILED,
            error="The import ran past its time limit; the files listed below were processed.",
        )
        raise
    except Exception as exc:
        run.finish(status=ImportBatch.Status.FAILED, error=f"The import stopped on an internal error: {exc!r}")
        raise
    batch = run.finish(status=ImportBatch.Status.DONE, error="")
    if batch.source_is_upload:
        _upload_delete(Path(batch.source_path), Path(batch.csv_path) if batch.csv_path else None)
    # New images join the queue in order: scored by the active model, or a cold start across cases without one.
    # Every file committed on its own above, so this sees them all; the scoring task it may queue waits for
    # on_commit itself. Imported here because inference imports the annotation models.
    from inference.services import queue_after_import

    queue_after_import(batch=batch)
    return batch


def importer_default() -> AbstractBaseUser | None:
    """The user the management commands import as when none is named: the first superuser, else admin."""
    users = get_user_model().objects.filter(is_active=True)
    return (
        users.filter(is_superuser=True).order_by("pk").first()
        or users.filter(groups__name=Role.ADMIN.value).order_by("pk").first()
    )


# --- batch rows ------------------------------------------------------------------------------------


def _importer_check(*, user: AbstractBaseUser) -> None:
    if not user_has_role(user, Role.ADMIN):
        raise PermissionDenied("Only admins may import images.")


def _batch_create(
    *,
    created_by: AbstractBaseUser,
    source: Path,
    source_name: str,
    trusted: bool,
    case_from_folder: bool,
    csv_path: Path | None,
    source_is_upload: bool,
    enqueue: bool,
) -> ImportBatch:
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ImportRejected(f"{source_name} is neither a folder nor a zip archive.")
    elif not source.is_dir():
        raise ImportRejected(f"{source_name} does not exist.")
    if csv_path is not None:
        if not csv_path.is_file():
            raise ImportRejected(f"The CSV {csv_path.name} does not exist.")
        try:
            # Read now for an immediate answer on the form; the task reads it again when it runs.
            csv_rows_read(path=csv_path, max_bytes=ImportLimits.from_settings().max_csv_bytes)
        except SourceInvalid as exc:
            raise ImportRejected(f"The CSV cannot be used: {exc}.") from None
    with transaction.atomic():
        batch = ImportBatch.objects.create(
            created_by=created_by,
            source_name=source_name[:255],
            source_path=str(source.resolve()),
            csv_path=str(csv_path.resolve()) if csv_path is not None else "",
            source_is_upload=source_is_upload,
            trusted=trusted,
            case_from_folder=case_from_folder,
        )
        if enqueue:
            # Imported here because the task module imports this one.
            from annotation.tasks import import_batch_process as import_batch_process_task

            transaction.on_commit(lambda: import_batch_process_task.delay(batch.pk))
    return batch


def _batch_start(*, batch: ImportBatch) -> ImportBatch:
    with transaction.atomic():
        batch = ImportBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status not in FINISHED:
            batch.status = ImportBatch.Status.RUNNING
            batch.started_at = batch.started_at or timezone.now()
            batch.save(update_fields=["status", "started_at"])
    return batch


def _upload_save(*, upload: UploadedFile, path: Path) -> None:
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)


def _upload_delete(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)


# --- processing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """What the worker threads learn about one file without touching the database."""

    entry: SourceEntry
    reason: str = ""
    sha256: str = ""
    size: int = 0
    image: ValidatedImage | None = None
    staged: tuple[StagedBlob, ...] = ()  # the image and its thumbnail, written under temporary names


class _BatchRun:
    """The state of one batch while it is processed: counters, caches, and the per-file steps."""

    def __init__(self, *, batch: ImportBatch, limits: ImportLimits, on_progress: ProgressCallback | None) -> None:
        self.batch = batch
        self.limits = limits
        self.on_progress = on_progress
        self.progress_every = max(1, getattr(settings, "HEMALOOP_IMPORT_PROGRESS_EVERY", 50))
        self.workers = max(1, getattr(settings, "HEMALOOP_IMPORT_WORKERS", min(4, os.cpu_count() or 1)))
        self.counts: Counter[str] = Counter()
        self.cases: dict[str, Case] = {}
        self.seen: dict[str, int] = {}  # sha256 -> image id imported by this batch
        self.done: set[str] = set()
        self.read_bytes = 0

    def execute(self) -> None:
        # A resumed batch keeps what it reported before the interruption.
        for name, outcome in ImportItem.objects.filter(batch=self.batch).values_list("name", "outcome"):
            self.done.add(name)
            self.counts[outcome] += 1
        self.seen = dict(CellImage.objects.filter(batch=self.batch).values_list("sha256", "id"))

        with source_open(path=Path(self.batch.source_path), limits=self.limits) as source:
            rows = []
            if self.batch.csv_path:
                rows = csv_rows_read(path=Path(self.batch.csv_path), max_bytes=self.limits.max_csv_bytes)
            plan = import_plan_build(
                names=[entry.name for entry in source.entries],
                rows=rows,
                classes={cell_class.code: cell_class for cell_class in CellClass.objects.all()},
                case_from_folder=self.batch.case_from_folder,
                unsafe=frozenset(entry.name for entry in source.entries if entry.problem),
            )
            self.batch.total = len(source.entries) + len(plan.unmatched)
            self.batch.skipped = source.skipped
            self._progress_save()
            todo = [entry for entry in source.entries if _item_name(entry.name) not in self.done]
            # Closed explicitly, so a batch that stops half-way cleans up its threads and staged files now.
            with (
                closing(self._prepared(source=source, plan=plan, entries=todo)) as prepared_files,
                closing(_chunks(prepared_files, size=LOOKUP_CHUNK)) as chunks,
            ):
                for chunk in chunks:
                    try:
                        hashes = [prepared.sha256 for prepared in chunk if prepared.image is not None]
                        known = _images_by_hash(hashes=hashes)
                        for prepared in chunk:
                            self._file_import(prepared=prepared, plan=plan, source=source, known=known)
                            if sum(self.counts.values()) % self.progress_every == 0:
                                self._progress_save()
                    finally:
                        # Duplicates, rejections and a batch that stops half-way leave no staged file behind.
                        _staged_discard(chunk)
        for row in plan.unmatched:
            name = row.file or f"CSV line {row.line}"
            if _item_name(name) not in self.done:
                reason = f"listed on CSV line {row.line} but not found in the source" if row.file else "no file name"
                self._item_add(name=name, outcome=ImportItem.Outcome.REJECTED, reason=reason)

    def finish(self, *, status: str, error: str) -> ImportBatch:
        self.batch.status = status
        self.batch.error = error
        self.batch.finished_at = timezone.now()
        self._progress_save()
        return self.batch

    # -- per file

    def _prepared(self, *, source: Source, plan: ImportPlan, entries: list[SourceEntry]) -> Iterator[_Prepared]:
        """Read, hash and decode files on a few threads (Pillow and hashlib release the GIL), in order."""
        if self.workers == 1:
            yield from (self._prepare(entry=entry, source=source, plan=plan) for entry in entries)
            return
        window: deque[Future[_Prepared]] = deque()
        # The look-ahead covers a lookup chunk plus work for every thread, so the threads keep decoding
        # while the database writes of a chunk run; it bounds memory to a few dozen files.
        lookahead = LOOKUP_CHUNK + 2 * self.workers
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="import")
        try:
            for entry in entries:
                window.append(pool.submit(self._prepare, entry=entry, source=source, plan=plan))
                if len(window) >= lookahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()
            pool.shutdown(wait=True)
            # Stopped early: what the threads staged for files nobody will import must go.
            _staged_discard(
                future.result() for future in window if not future.cancelled() and future.exception() is None
            )

    def _prepare(self, *, entry: SourceEntry, source: Source, plan: ImportPlan) -> _Prepared:
        meta = plan.files[entry.name]
        if entry.problem or isinstance(meta, str):
            return _Prepared(entry=entry, reason=entry.problem or str(meta))
        try:
            data = source.read(entry, limit=self.limits.max_file_bytes)
        except FileRejected as exc:
            return _Prepared(entry=entry, reason=str(exc))
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            image = image_validate(data=data, limits=self.limits)
        except FileRejected as exc:
            return _Prepared(entry=entry, reason=str(exc), sha256=sha256, size=len(data))
        staged = [blob_stage(name=image_storage_name(sha256=sha256, image_format=image.format), data=data)]
        try:
            staged.append(blob_stage(name=thumbnail_storage_name(sha256=sha256), data=image.thumbnail_jpeg))
        except BaseException:
            blob_discard(staged=staged[0])
            raise
        return _Prepared(entry=entry, sha256=sha256, size=len(data), image=image, staged=tuple(staged))

    def _file_import(self, *, prepared: _Prepared, plan: ImportPlan, source: Source, known: dict[str, int]) -> None:
        entry = prepared.entry
        self.read_bytes += prepared.size
        if source.is_archive and self.read_bytes > self.limits.max_total_bytes:
            raise SourceInvalid(f"the archive expands to more than {megabytes(self.limits.max_total_bytes)}")
        if prepared.image is None:
            self._item_add(name=entry.name, outcome=ImportItem.Outcome.REJECTED, reason=prepared.reason)
            return
        existing = self.seen.get(prepared.sha256) or known.get(prepared.sha256)
        if existing is not None:
            self._duplicate_add(name=entry.name, image_id=existing)
            return
        meta = plan.files[entry.name]
        assert isinstance(meta, FileMeta)
        try:
            image_id, duplicate = self._image_store(prepared=prepared, meta=meta)
        except FileRejected as exc:
            self._item_add(name=entry.name, outcome=ImportItem.Outcome.REJECTED, reason=str(exc))
            return
        except DatabaseError as exc:
            self._item_add(name=entry.name, outcome=ImportItem.Outcome.REJECTED, reason=f"database error: {exc}")
            return
        if duplicate:
            self._duplicate_add(name=entry.name, image_id=image_id)
        else:
            self.seen[prepared.sha256] = image_id
            self.counts[ImportItem.Outcome.IMPORTED] += 1

    def _image_store(self, *, prepared: _Prepared, meta: FileMeta) -> tuple[int, bool]:
        """Write the rows, the file and its thumbnail as one unit; (image id, whether it was a duplicate)."""
        assert prepared.image is not None
        image = prepared.image
        file_name = image_storage_name(sha256=prepared.sha256, image_format=image.format)
        thumb_name = thumbnail_storage_name(sha256=prepared.sha256)
        try:
            with transaction.atomic():
                case = self._case_get(meta=meta)
                final_label = meta.reference_label if self.batch.trusted else None
                # The row goes in before the files: it claims the content address, and a concurrent
                # import of the same bytes waits on the unique index until this transaction ends. So
                # the files are ours to write, and on failure ours to delete, whatever else runs.
                cell_image = CellImage.objects.create(
                    sha256=prepared.sha256,
                    file=file_name,
                    thumbnail=thumb_name,
                    format=image.format,
                    width=image.width,
                    height=image.height,
                    size_bytes=prepared.size,
                    original_name=_text_clean(os.path.basename(prepared.entry.name))[:ORIGINAL_NAME_MAX],
                    case=case,
                    batch=self.batch,
                    analyzer_class=meta.analyzer_class,
                    reference_label=meta.reference_label,
                    final_label=final_label,
                    final_method=TRUSTED_IMPORT if final_label is not None else "",
                    # A trusted label is final: the image never enters the labeling queue.
                    label_status=LabelStatus.FINAL if final_label is not None else LabelStatus.NEEDS_LABELS,
                    finalized_at=timezone.now() if final_label is not None else None,
                )
                if final_label is not None:
                    LabelEvent.objects.create(
                        image=cell_image,
                        actor=self.batch.created_by,
                        kind=LabelEvent.Kind.TRUSTED_IMPORT,
                        cell_class=final_label,
                        note=f"Import #{self.batch.pk} ({self.batch.source_name[:200]})",
                    )
                try:
                    for staged in prepared.staged:
                        blob_publish(staged=staged)
                    _item_create(
                        batch=self.batch,
                        name=prepared.entry.name,
                        outcome=ImportItem.Outcome.IMPORTED,
                        image_id=cell_image.pk,
                    )
                except BaseException:
                    blob_delete(name=file_name)
                    blob_delete(name=thumb_name)
                    raise
        except IntegrityError:
            # Another batch committed the same bytes after this chunk's duplicate lookup.
            existing = CellImage.objects.filter(sha256=prepared.sha256).values_list("pk", flat=True).first()
            if existing is None:
                raise
            return existing, True
        except DatabaseError:
            # Only a failed commit gets here with files written: keep them only if a row uses them.
            if not CellImage.objects.filter(sha256=prepared.sha256).exists():
                blob_delete(name=file_name)
                blob_delete(name=thumb_name)
            raise
        if case is not None:
            self.cases[case.code] = case
        return cell_image.pk, False

    def _case_get(self, *, meta: FileMeta) -> Case | None:
        """The file's case, created on first use; a diagnosis may fill a blank one but not contradict it."""
        if not meta.case_code:
            return None
        case = self.cases.get(meta.case_code)
        if case is None:
            case, _ = Case.objects.get_or_create(code=meta.case_code, defaults={"diagnosis": meta.diagnosis})
        if meta.diagnosis and case.diagnosis and case.diagnosis != meta.diagnosis:
            raise FileRejected(f"case {case.code!r} has diagnosis {case.diagnosis}, but the CSV gives {meta.diagnosis}")
        if meta.diagnosis and not case.diagnosis:
            Case.objects.filter(pk=case.pk).update(diagnosis=meta.diagnosis)
            # A copy: the cached case must not change if this file's transaction rolls back.
            case = copy.copy(case)
            case.diagnosis = meta.diagnosis
        return case

    def _duplicate_add(self, *, name: str, image_id: int) -> None:
        original = CellImage.objects.filter(pk=image_id).values_list("original_name", "batch_id").first()
        detail = f" ({original[0]}, batch #{original[1]})" if original else ""
        self._item_add(
            name=name,
            outcome=ImportItem.Outcome.DUPLICATE,
            reason=f"same content as image #{image_id}{detail}",
            image_id=image_id,
        )

    def _item_add(self, *, name: str, outcome: str, reason: str, image_id: int | None = None) -> None:
        _item_create(batch=self.batch, name=name, outcome=outcome, reason=reason, image_id=image_id)
        self.counts[outcome] += 1

    def _progress_save(self) -> None:
        batch = self.batch
        batch.imported = self.counts[ImportItem.Outcome.IMPORTED]
        batch.duplicates = self.counts[ImportItem.Outcome.DUPLICATE]
        batch.rejected = self.counts[ImportItem.Outcome.REJECTED]
        batch.processed = batch.imported + batch.duplicates + batch.rejected
        batch.save(
            update_fields=[
                "status",
                "error",
                "finished_at",
                "total",
                "skipped",
                "processed",
                "imported",
                "duplicates",
                "rejected",
            ]
        )
        if self.on_progress is not None:
            self.on_progress(batch)


def _item_name(name: str) -> str:
    return _text_clean(name)[:NAME_MAX]


def _text_clean(text: str) -> str:
    """Names from archives and disks may hold bytes PostgreSQL text cannot store (NUL, lone surrogates)."""
    return text.replace("\x00", "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _item_create(*, batch: ImportBatch, name: str, outcome: str, reason: str = "", image_id: int | None = None) -> None:
    ImportItem.objects.create(
        batch=batch, name=_item_name(name), outcome=outcome, reason=_text_clean(reason), image_id=image_id
    )


def _images_by_hash(*, hashes: list[str]) -> dict[str, int]:
    """Images already imported with these hashes: one query for a whole chunk of files."""
    return dict(CellImage.objects.filter(sha256__in=hashes).values_list("sha256", "pk"))


def _chunks(items: Iterator[_Prepared], *, size: int) -> Iterator[list[_Prepared]]:
    chunk: list[_Prepared] = []
    try:
        for item in items:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    except BaseException:
        _staged_discard(chunk)
        raise


def _staged_discard(prepared_files: Iterable[_Prepared]) -> None:
    for prepared in prepared_files:
        for staged in prepared.staged:
            blob_discard(staged=staged)

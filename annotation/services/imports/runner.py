"""Processing an import batch (the task runs this): files read and decoded on a few threads, duplicates looked
up a chunk at a time, progress sent as heartbeats as it goes, and `import_batch_finished` sent once the batch
has succeeded.

The batch row is a core.jobs.Job: a worker claims it (queued -> running), heartbeats between files and finishes it;
the periodic reaper fails a batch whose worker died. A redelivered task resumes a running batch only once that
batch's heartbeats have stopped for TAKEOVER_AFTER, so two workers never import the same batch at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from annotation.models import Case, CellClass, CellImage, ImportBatch, ImportItem
from annotation.services.imports import items
from annotation.services.imports.items import PreparedFile
from annotation.services.imports.uploads import upload_delete
from annotation.services.metadata import ImportPlan, csv_rows_read, import_plan_build
from annotation.services.sources import Source, SourceEntry, SourceInvalid, source_open
from annotation.services.validation import FileRejected, ImportLimits, megabytes
from annotation.signals import import_batch_finished
from core.jobs import JobStatus, job_claim, job_finish, job_heartbeat
from core.storage import storage_temporary_copy

LOOKUP_CHUNK = 32
# A live worker heartbeats at least this often (and every HEMALOOP_IMPORT_PROGRESS_EVERY files).
HEARTBEAT_EVERY_S = 5.0
# A running batch without a heartbeat for this long has lost its worker: a redelivered task may resume it.
# Far above HEARTBEAT_EVERY_S, and far below ImportBatch.STALE_AFTER, so the reaper has not failed it yet.
TAKEOVER_AFTER = timedelta(minutes=1)

ProgressCallback = Callable[[ImportBatch], None]


class ImportBatchBusy(Exception):
    """The batch is running and its worker is still sending heartbeats: this delivery must not run it too."""


class _BatchLost(Exception):
    """The batch stopped running under this worker (the reaper failed it): stop without finishing it."""


def import_batch_process(*, batch: ImportBatch, on_progress: ProgressCallback | None = None) -> ImportBatch:
    """Import every file of the batch's source and leave the per-file report; the task calls this.

    The batch fails (status failed, error set) only when the source as a whole is invalid; single bad
    files are rejected in the report. A finished batch is returned as it is. A batch found running
    resumes after the files it already reported if its worker is gone (no heartbeat for TAKEOVER_AFTER);
    while that worker still beats, ImportBatchBusy is raised.
    """
    claimed = job_claim(model=ImportBatch, job_id=batch.pk) or _batch_take_over(batch_id=batch.pk)
    if claimed is None:
        batch = ImportBatch.objects.get(pk=batch.pk)
        if batch.status == JobStatus.RUNNING:
            raise ImportBatchBusy(f"import #{batch.pk} is running on another worker")
        return batch
    run = _BatchRun(batch=claimed, limits=ImportLimits.from_settings(), on_progress=on_progress)
    try:
        run.execute()
    except _BatchLost:
        claimed.refresh_from_db()
        return claimed
    except SourceInvalid as exc:
        return run.finish(status=JobStatus.FAILED, error=f"The whole import was rejected: {exc}.")
    except SoftTimeLimitExceeded:
        run.finish(
            status=JobStatus.FAILED,
            error="The import ran past its time limit; the files listed below were processed.",
        )
        raise
    except Exception as exc:
        run.finish(status=JobStatus.FAILED, error=f"The import stopped on an internal error: {exc!r}")
        raise
    batch = run.finish(status=JobStatus.SUCCEEDED, error="")
    if batch.status != JobStatus.SUCCEEDED:  # the reaper failed it just before the end
        return batch
    if batch.source_is_upload:
        upload_delete(batch.source_path, batch.csv_path)
    # Higher floors react here (inference queues the new images: scored by the active model, or a cold start
    # across cases). Every file committed on its own above, so receivers see them all.
    import_batch_finished.send(sender=ImportBatch, batch=batch)
    return batch


def import_order(*, batch: ImportBatch, entries: list[SourceEntry]) -> list[SourceEntry]:
    """The batch's files in the order they are imported: shuffled by the batch's secret seed, the same on every
    run of the batch. Sources list files sorted by name, i.e. by class folder; ids in that order spell it out."""
    key = batch.order_seed.to_bytes(8, "big", signed=True)
    # A keyed hash of each name: unpredictable without the seed, and independent of the order entries come in.
    return sorted(
        entries, key=lambda entry: hmac.digest(key, entry.name.encode("utf-8", "surrogateescape"), hashlib.sha256)
    )


def _batch_take_over(*, batch_id: int) -> ImportBatch | None:
    """Claim a running batch whose worker went silent (one conditional UPDATE, so one redelivery wins)."""
    now = timezone.now()
    taken = ImportBatch.objects.filter(
        pk=batch_id, status=JobStatus.RUNNING, heartbeat_at__lt=now - TAKEOVER_AFTER
    ).update(heartbeat_at=now)
    return ImportBatch.objects.get(pk=batch_id) if taken else None


class _BatchRun:
    """The state of one batch while it is processed: counters, caches, and the per-file steps."""

    def __init__(self, *, batch: ImportBatch, limits: ImportLimits, on_progress: ProgressCallback | None) -> None:
        self.batch = batch
        self.limits = limits
        self.on_progress = on_progress
        self.progress_every = max(1, settings.HEMALOOP_IMPORT_PROGRESS_EVERY)
        self.workers = max(1, settings.HEMALOOP_IMPORT_WORKERS)
        self.counts: Counter[str] = Counter()
        self.cases: dict[str, Case] = {}
        self.seen: dict[str, int] = {}  # sha256 -> image id imported by this batch
        self.reported: set[str] = set()  # names in the report, from before an interruption or from this run
        self.read_bytes = 0
        self.beat_at = time.monotonic()

    @contextlib.contextmanager
    def _source_local(self) -> Iterator[tuple[Path, Path | None]]:
        """The source and CSV as local files: an upload is copied from the storage (this worker may be another host
        than the web server that stored it), a folder or zip of the management commands is used where it lies."""
        if not self.batch.source_is_upload:
            yield Path(self.batch.source_path), Path(self.batch.csv_path) if self.batch.csv_path else None
            return
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(storage_temporary_copy(name=self.batch.source_path))
            csv = stack.enter_context(storage_temporary_copy(name=self.batch.csv_path)) if self.batch.csv_path else None
            yield source, csv

    def execute(self) -> None:
        # A resumed batch keeps what it reported before the interruption.
        for name, outcome in ImportItem.objects.filter(batch=self.batch).values_list("name", "outcome"):
            self.reported.add(name)
            self.counts[outcome] += 1
        self.seen = dict(CellImage.objects.filter(batch=self.batch).values_list("sha256", "id"))

        with (
            self._source_local() as (source_path, csv_path),
            source_open(path=source_path, limits=self.limits) as source,
        ):
            rows = []
            if csv_path is not None:
                rows = csv_rows_read(path=csv_path, max_bytes=self.limits.max_csv_bytes)
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
            todo = import_order(batch=self.batch, entries=source.entries)
            todo = [entry for entry in todo if items.item_name(entry.name) not in self.reported]
            # Closed explicitly, so a batch that stops half-way cleans up its threads and staged files now.
            with (
                closing(self._prepared(source=source, plan=plan, entries=todo)) as prepared_files,
                closing(_chunks(prepared_files, size=LOOKUP_CHUNK)) as chunks,
            ):
                for chunk in chunks:
                    try:
                        hashes = [prepared.sha256 for prepared in chunk if prepared.image is not None]
                        known = items.images_by_hash(hashes=hashes)
                        for prepared in chunk:
                            self._file_import(prepared=prepared, plan=plan, source=source, known=known)
                            self._file_reported()
                    finally:
                        # Duplicates, rejections and a batch that stops half-way leave no staged file behind.
                        items.staged_discard(chunk)
        for row in plan.unmatched:
            name = row.file or f"CSV line {row.line}"
            if items.item_name(name) not in self.reported:
                reason = f"listed on CSV line {row.line} but not found in the source" if row.file else "no file name"
                self._item_add(name=name, outcome=ImportItem.Outcome.REJECTED, reason=reason)
                self._file_reported()

    def finish(self, *, status: str, error: str) -> ImportBatch:
        """End the batch with its final counts; a batch the reaper failed meanwhile keeps that outcome."""
        self.batch = job_finish(job=self.batch, status=status, error=error, **self._counters())
        if self.on_progress is not None:
            self.on_progress(self.batch)
        return self.batch

    def _prepared(self, *, source: Source, plan: ImportPlan, entries: list[SourceEntry]) -> Iterator[PreparedFile]:
        """Read, hash and decode files on a few threads (Pillow and hashlib release the GIL), in order."""
        if self.workers == 1:
            for entry in entries:
                yield items.file_prepare(entry=entry, source=source, plan=plan, limits=self.limits)
            return
        window: deque[Future[PreparedFile]] = deque()
        # The look-ahead covers a lookup chunk plus work for every thread, so the threads keep decoding
        # while the database writes of a chunk run; it bounds memory to a few dozen files.
        lookahead = LOOKUP_CHUNK + 2 * self.workers
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="import")
        try:
            for entry in entries:
                window.append(
                    pool.submit(items.file_prepare, entry=entry, source=source, plan=plan, limits=self.limits)
                )
                if len(window) >= lookahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()
            pool.shutdown(wait=True)
            # Stopped early: what the threads staged for files nobody will import must go.
            items.staged_discard(
                future.result() for future in window if not future.cancelled() and future.exception() is None
            )

    def _file_import(self, *, prepared: PreparedFile, plan: ImportPlan, source: Source, known: dict[str, int]) -> None:
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
        try:
            image_id, duplicate = items.image_store(
                batch=self.batch, prepared=prepared, meta=plan.files[entry.name], cases=self.cases
            )
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
        items.item_create(batch=self.batch, name=name, outcome=outcome, reason=reason, image_id=image_id)
        self.counts[outcome] += 1

    def _file_reported(self) -> None:
        """After each reported file: progress every HEMALOOP_IMPORT_PROGRESS_EVERY files, and a heartbeat at
        least every HEARTBEAT_EVERY_S, so slow files never make a live batch look dead to the reaper."""
        if sum(self.counts.values()) % self.progress_every == 0:
            self._progress_save()
        elif time.monotonic() - self.beat_at >= HEARTBEAT_EVERY_S:
            self._heartbeat()

    def _progress_save(self) -> None:
        self._heartbeat()
        if self.on_progress is not None:
            self.on_progress(self.batch)

    def _heartbeat(self) -> None:
        if not job_heartbeat(job=self.batch, **self._counters()):
            raise _BatchLost
        self.beat_at = time.monotonic()

    def _counters(self) -> dict[str, int]:
        imported = self.counts[ImportItem.Outcome.IMPORTED]
        duplicates = self.counts[ImportItem.Outcome.DUPLICATE]
        rejected = self.counts[ImportItem.Outcome.REJECTED]
        return {
            "done": imported + duplicates + rejected,
            "total": self.batch.total,
            "skipped": self.batch.skipped,
            "imported": imported,
            "duplicates": duplicates,
            "rejected": rejected,
        }


def _chunks(prepared_files: Iterator[PreparedFile], *, size: int) -> Iterator[list[PreparedFile]]:
    chunk: list[PreparedFile] = []
    try:
        for prepared in prepared_files:
            chunk.append(prepared)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    except BaseException:
        items.staged_discard(chunk)
        raise

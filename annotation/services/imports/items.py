"""One file of an import: read, hashed and staged off the database (on a thread), then its rows and blobs
written as one transaction, and its line in the batch's report."""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from annotation.models import Case, CellImage, FinalMethod, ImportBatch, ImportItem, LabelEvent, LabelStatus
from annotation.services.metadata import FileMeta, ImportPlan
from annotation.services.sources import Source, SourceEntry
from annotation.services.validation import FileRejected, ImportLimits, ValidatedImage, image_validate
from annotation.storage import (
    StagedBlob,
    blob_delete,
    blob_discard,
    blob_publish,
    blob_stage,
    image_storage_name,
    thumbnail_storage_name,
)

NAME_MAX = ImportItem._meta.get_field("name").max_length
ORIGINAL_NAME_MAX = CellImage._meta.get_field("original_name").max_length


@dataclass(frozen=True)
class PreparedFile:
    """What the worker threads learn about one file without touching the database."""

    entry: SourceEntry
    reason: str = ""
    sha256: str = ""
    size: int = 0
    image: ValidatedImage | None = None
    staged: tuple[StagedBlob, ...] = ()  # the image and its thumbnail, written under temporary names


def file_prepare(*, entry: SourceEntry, source: Source, plan: ImportPlan, limits: ImportLimits) -> PreparedFile:
    """Read, hash, validate and stage one file; a file that cannot be imported comes back with its reason."""
    reason = entry.problem or plan.rejected.get(entry.name, "")
    if reason:
        return PreparedFile(entry=entry, reason=reason)
    try:
        data = source.read(entry, limit=limits.max_file_bytes)
    except FileRejected as exc:
        return PreparedFile(entry=entry, reason=str(exc))
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = image_validate(data=data, limits=limits)
    except FileRejected as exc:
        return PreparedFile(entry=entry, reason=str(exc), sha256=sha256, size=len(data))
    staged = [blob_stage(name=image_storage_name(sha256=sha256, image_format=image.format), data=data)]
    try:
        staged.append(blob_stage(name=thumbnail_storage_name(sha256=sha256), data=image.thumbnail_jpeg))
    except BaseException:
        blob_discard(staged=staged[0])
        raise
    return PreparedFile(entry=entry, sha256=sha256, size=len(data), image=image, staged=tuple(staged))


def staged_discard(prepared_files: Iterable[PreparedFile]) -> None:
    for prepared in prepared_files:
        for staged in prepared.staged:
            blob_discard(staged=staged)


def image_store(
    *, batch: ImportBatch, prepared: PreparedFile, meta: FileMeta, cases: dict[str, Case]
) -> tuple[int, bool]:
    """Write the rows, the file and its thumbnail as one unit; (image id, whether it was a duplicate).

    `cases` is the batch's cache of cases by code: the file's case joins it once the file is stored.
    """
    assert prepared.image is not None
    image = prepared.image
    file_name = image_storage_name(sha256=prepared.sha256, image_format=image.format)
    thumb_name = thumbnail_storage_name(sha256=prepared.sha256)
    try:
        with transaction.atomic():
            case = _case_get(meta=meta, cases=cases)
            final_label = meta.reference_label if batch.trusted else None
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
                original_name=text_clean(os.path.basename(prepared.entry.name))[:ORIGINAL_NAME_MAX],
                case=case,
                batch=batch,
                analyzer_class=meta.analyzer_class,
                reference_label=meta.reference_label,
                final_label=final_label,
                final_method=FinalMethod.TRUSTED_IMPORT if final_label is not None else "",
                # A trusted label is final: the image never enters the labeling queue.
                label_status=LabelStatus.FINAL if final_label is not None else LabelStatus.NEEDS_LABELS,
                finalized_at=timezone.now() if final_label is not None else None,
            )
            if final_label is not None:
                LabelEvent.objects.create(
                    image=cell_image,
                    actor=batch.requested_by,
                    kind=LabelEvent.Kind.TRUSTED_IMPORT,
                    cell_class=final_label,
                    note=f"Import #{batch.pk} ({batch.source_name[:200]})",
                )
            try:
                for staged in prepared.staged:
                    blob_publish(staged=staged)
                item_create(
                    batch=batch,
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
        cases[case.code] = case
    return cell_image.pk, False


def item_create(*, batch: ImportBatch, name: str, outcome: str, reason: str = "", image_id: int | None = None) -> None:
    ImportItem.objects.create(
        batch=batch, name=item_name(name), outcome=outcome, reason=text_clean(reason), image_id=image_id
    )


def item_name(name: str) -> str:
    """The name a file is reported under (and recognised by when a batch resumes)."""
    return text_clean(name)[:NAME_MAX]


def text_clean(text: str) -> str:
    """Names from archives and disks may hold bytes PostgreSQL text cannot store (NUL, lone surrogates)."""
    return text.replace("\x00", "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def images_by_hash(*, hashes: list[str]) -> dict[str, int]:
    """Images already imported with these hashes: one query for a whole chunk of files."""
    return dict(CellImage.objects.filter(sha256__in=hashes).values_list("sha256", "pk"))


def _case_get(*, meta: FileMeta, cases: dict[str, Case]) -> Case | None:
    """The file's case, created on first use; a diagnosis may fill a blank one but not contradict it."""
    if not meta.case_code:
        return None
    case = cases.get(meta.case_code)
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

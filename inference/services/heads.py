"""A queue that follows the labels: every HEMALOOP_HEAD_REFRESH_EVERY new final labels (or when an admin asks), a
light head (training.ml.heads) is trained on the embedding index's vectors of all final labels, calibrated on
case-grouped held-out folds, registered as a head ModelVersion, activated unless an admin pinned a fully trained
ensemble, and the pool without a final label is rescored from the index and the queue re-ordered in one pass.
Prediction rows follow, so the review list and the model's opinion read the head like any version."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Case, Count, IntegerField, Max, Value, When
from django.db.models.functions import Coalesce

from annotation.models import CellClass, CellImage, LabelStatus
from core.jobs import UNFINISHED, JobStatus, job_claim, job_finish, job_heartbeat, job_is_stale
from inference.models import EmbeddingSpace, HeadRefreshJob, Prediction
from inference.services.index import index_load, index_space_get, index_spec_for
from inference.services.selection import queue_priorities_select
from training.ml.heads import HeadConfig, LinearHead, head_bytes, head_from_bytes, head_probabilities, train_head
from training.ml.uncertainty import prediction_stats
from training.models import ModelVersion
from training.selectors import model_version_active
from training.services.versions import model_version_activate_refreshed_head

_logger = logging.getLogger(__name__)

MIN_LABELS = 10  # fewer final labels in the index than this train no head (nothing to hold out)
PREDICTION_CHUNK = 2000
NEEDS, FINAL, OTHER = 0, 1, 2  # ImageTable.status codes


@dataclass(frozen=True)
class ImageTable:
    """The pool as arrays in id order: status (NEEDS, FINAL, OTHER), final CellClass id (-1 none), case id (-1)."""

    ids: np.ndarray
    status: np.ndarray
    final_class: np.ndarray
    case: np.ndarray

    def take(self, rows: np.ndarray) -> ImageTable:
        """The table's rows `rows`, in that order."""
        return ImageTable(
            ids=self.ids[rows], status=self.status[rows], final_class=self.final_class[rows], case=self.case[rows]
        )

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For index ids: (mask of those still in the pool, their rows in this table)."""
        pos = np.clip(np.searchsorted(self.ids, ids), 0, max(len(self.ids) - 1, 0))
        present = (self.ids[pos] == ids) if len(self.ids) else np.zeros(len(ids), dtype=bool)
        return present, pos[present]


def image_table() -> ImageTable:
    """Every image's id, status, final class and case, as integers from one query (a million rows in about a
    second; the ORM's objects would take a minute)."""
    rows = list(
        CellImage.objects.order_by("id")
        .annotate(
            status_code=Case(
                When(label_status=LabelStatus.NEEDS_LABELS, then=Value(NEEDS)),
                When(label_status=LabelStatus.FINAL, then=Value(FINAL)),
                default=Value(OTHER),
                output_field=IntegerField(),
            ),
            final_code=Coalesce("final_label_id", Value(-1)),
            case_code=Coalesce("case_id", Value(-1)),
        )
        .values_list("id", "status_code", "final_code", "case_code")
        .iterator(chunk_size=50_000)
    )
    table = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return ImageTable(ids=table[:, 0], status=table[:, 1], final_class=table[:, 2], case=table[:, 3])


def labels_fingerprint() -> dict:
    """What a head is trained on, to tell whether anything changed: how many final labels with a class there are and
    when the last was decided (a re-opened and re-resolved cell changes it)."""
    summary = CellImage.objects.filter(label_status=LabelStatus.FINAL, final_label__isnull=False).aggregate(
        count=Count("id"), last=Max("finalized_at")
    )
    return {"count": summary["count"], "last": summary["last"].isoformat() if summary["last"] else None}


def head_latest(*, space: EmbeddingSpace | None = None) -> ModelVersion | None:
    """The most recently registered head (of the space's backbone)."""
    heads = ModelVersion.objects.filter(kind=ModelVersion.Kind.HEAD)
    if space is not None:
        heads = heads.filter(config__space=space.key)
    return heads.order_by("-created_at", "-id").first()


def head_refresh_unfinished() -> HeadRefreshJob | None:
    jobs = HeadRefreshJob.objects.filter(status__in=UNFINISHED).order_by("id")
    return next((job for job in jobs if not job_is_stale(job)), None)


def head_refresh_due() -> bool:
    """Whether HEMALOOP_HEAD_REFRESH_EVERY final labels were added since the latest head was trained (since none,
    for the first head); always False with the setting at 0."""
    every = settings.HEMALOOP_HEAD_REFRESH_EVERY
    if every <= 0:
        return False
    latest = head_latest()
    trained_on = (latest.config.get("labels") or {}).get("count", 0) if latest else 0
    return labels_fingerprint()["count"] - trained_on >= every


def _classes() -> list[tuple[int, str]]:
    return list(CellClass.objects.filter(is_active=True).order_by("order").values_list("id", "code"))


def _head_register(*, space: EmbeddingSpace, result, classes: list[str], fingerprint: dict, based_on) -> ModelVersion:
    backbone = space.backbone
    name = default_storage.save(
        f"models/heads/space{space.pk}-labels{fingerprint['count']}.safetensors",
        ContentFile(head_bytes(result, classes=classes, backbone=backbone)),
    )
    return ModelVersion.objects.create(
        kind=ModelVersion.Kind.HEAD,
        run=None,
        out_dir=name,
        config={
            "backbone": backbone,
            "space": space.key,
            "classes": classes,
            "labels": fingerprint,
            "head": result.metrics["config"],
            "based_on": based_on.pk if based_on is not None else None,
        },
        temperature=result.temperature,
        metrics=result.metrics,
    )


def _skip(job: HeadRefreshJob, outcome: str) -> HeadRefreshJob:
    _logger.info("refresh %s skipped: %s", job.pk, outcome)
    return job_finish(job=job, status=JobStatus.SUCCEEDED, outcome=f"skipped: {outcome}")


def head_refresh_run(*, job_id: int, config: HeadConfig | None = None) -> HeadRefreshJob | None:
    """Claim a queued refresh and run it: train the head on the index vectors of every final label of the active
    version's backbone, register it, activate it (HEMALOOP_HEAD_AUTO_ACTIVATE, and no pinned ensemble), rescore
    the pool and re-order the queue, then write its Prediction rows (the job's progress counts them).

    Skipped (succeeded, with the reason as outcome) when the final labels are those of the latest head of the same
    backbone, or fewer than MIN_LABELS of them are in the index. None when the job was not queued.
    """
    job = job_claim(model=HeadRefreshJob, job_id=job_id)
    if job is None:
        return None
    try:
        active = model_version_active()
        space = index_space_get(spec=index_spec_for(active))
        job_heartbeat(job=job, space=space)
        fingerprint = labels_fingerprint()
        latest = head_latest(space=space)
        if latest is not None and latest.config.get("labels") == fingerprint:
            return _skip(job, f"no new final labels since model version {latest.pk}")
        ids, matrix = index_load(space=space)
        table = image_table()
        present, rows = table.rows_of(ids)
        ids, matrix = ids[present], matrix[present]
        classes = _classes()
        column = {class_id: i for i, (class_id, _) in enumerate(classes)}
        final = table.final_class[rows]
        labeled = (table.status[rows] == FINAL) & np.isin(final, list(column))
        if labeled.sum() < MIN_LABELS or len(np.unique(final[labeled])) < 2:
            return _skip(
                job, f"{int(labeled.sum())} final labels of {len(np.unique(final[labeled]))} classes in the index"
            )
        case = table.case[rows][labeled]
        groups = np.where(case >= 0, case, -ids[labeled] - 1)  # a cell without a case is its own group
        y = np.array([column[c] for c in final[labeled]], dtype=np.int64)
        result = train_head(matrix[labeled], y, groups, num_classes=len(classes), config=config)
        version = _head_register(
            space=space, result=result, classes=[code for _, code in classes], fingerprint=fingerprint, based_on=active
        )
        activated = settings.HEMALOOP_HEAD_AUTO_ACTIVATE and model_version_activate_refreshed_head(version=version)
        outcome = f"model version {version.pk}, CV macro-F1 {_score(result.metrics['cv_macro_f1'])}"
        if activated:
            mode, chosen = _rescore(version=version, ids=ids, matrix=matrix, pool=table.take(rows), job=job)
            outcome += f", active, prioritised {len(chosen)} ({mode} cells)"
        else:
            outcome += (
                ", candidate (an admin pinned a trained ensemble)" if settings.HEMALOOP_HEAD_AUTO_ACTIVATE else ""
            )
    except Exception as exc:
        _logger.exception("refresh %s failed", job.pk)
        job_finish(job=job, status=JobStatus.FAILED, error=str(exc))
        raise
    return job_finish(job=job, status=JobStatus.SUCCEEDED, model_version=version, outcome=outcome[:300])


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def head_rescore(*, version: ModelVersion, missing_only: bool = False) -> list[int]:
    """Rescore the pool with an active head from the index and re-order the queue (after an admin activates a head,
    or the index grew); `missing_only` writes Prediction rows only for images without one."""
    ids, matrix, pool = _index_pool(version=version)
    return _rescore(version=version, ids=ids, matrix=matrix, pool=pool, missing_only=missing_only)[1]


def head_queue_order(*, version: ModelVersion) -> tuple[str, list[int]]:
    """Re-order the queue with an active head's probabilities from the index, writing no Prediction (Apply now)."""
    ids, matrix, pool = _index_pool(version=version)
    head, column_class = _head_load(version=version)
    return _queue_order(version=version, ids=ids, matrix=matrix, pool=pool, head=head, column_class=column_class)[:2]


def _index_pool(*, version: ModelVersion) -> tuple[np.ndarray, np.ndarray, ImageTable]:
    # The index rows of images still in the pool, with their table rows aligned to them.
    ids, matrix = index_load(space=index_space_get(spec=index_spec_for(version)))
    table = image_table()
    present, rows = table.rows_of(ids)
    return ids[present], matrix[present], table.take(rows)


def _head_load(*, version: ModelVersion) -> tuple[LinearHead, np.ndarray]:
    # The head and the CellClass id of each of its columns.
    with default_storage.open(version.out_dir, "rb") as handle:
        head, meta = head_from_bytes(handle.read())
    class_ids = dict(CellClass.objects.values_list("code", "id"))
    return head, np.array([class_ids[code] for code in meta["classes"]], dtype=np.int64)


def head_round(*, version: ModelVersion) -> int:
    """Which head this is, counting from 1 in registration order: its queue's selection round (`round_seed`)."""
    return ModelVersion.objects.filter(kind=ModelVersion.Kind.HEAD, pk__lte=version.pk).count()


def _queue_order(
    *, version: ModelVersion, ids: np.ndarray, matrix: np.ndarray, pool: ImageTable, head: LinearHead, column_class
) -> tuple[str, list[int], np.ndarray]:
    """`queue_priorities_select` with the head's calibrated probabilities and the final labels as its class indices;
    returns (branch, chosen image ids, the (N, C) probabilities)."""
    probabilities = head_probabilities(head, version.temperature, matrix)
    column = {int(class_id): i for i, class_id in enumerate(column_class)}
    labeled = (pool.status == FINAL) & np.isin(pool.final_class, column_class)
    mode, chosen = queue_priorities_select(
        ids=ids,
        vectors=matrix,
        candidate=pool.status == NEEDS,
        labels=np.array([column[int(c)] for c in pool.final_class[labeled]], dtype=np.int64),
        cases=pool.case,
        round_=head_round(version=version),
        probabilities=probabilities,
    )
    return mode, chosen, probabilities


def _rescore(
    *,
    version: ModelVersion,
    ids: np.ndarray,
    matrix: np.ndarray,
    pool: ImageTable,
    job: HeadRefreshJob | None = None,
    missing_only: bool = False,
) -> tuple[str, list[int]]:
    """Score every index row with the head, order the queue by the rows that still need labels (recording the branch
    on the job), then upsert Prediction rows (all, or those missing) for the review list and the model's opinion;
    returns (branch, chosen image ids)."""
    head, column_class = _head_load(version=version)
    mode, chosen, probabilities = _queue_order(
        version=version, ids=ids, matrix=matrix, pool=pool, head=head, column_class=column_class
    )
    if job is not None:
        job_heartbeat(job=job, selection=mode)
    write = np.ones(len(ids), dtype=bool)
    if missing_only:
        scored = set(Prediction.objects.filter(model_version=version).values_list("image_id", flat=True))
        write = np.array([int(i) not in scored for i in ids], dtype=bool)
    rows = np.flatnonzero(write)
    for done, start in enumerate(range(0, len(rows), PREDICTION_CHUNK), start=1):
        part = rows[start : start + PREDICTION_CHUNK]
        _predictions_write(version=version, ids=ids[part], probabilities=probabilities[part], column_class=column_class)
        if job is not None:
            job_heartbeat(job=job, done=min(done * PREDICTION_CHUNK, len(rows)), total=len(rows))
    return mode, chosen


def _predictions_write(
    *, version: ModelVersion, ids: np.ndarray, probabilities: np.ndarray, column_class: np.ndarray
) -> None:
    top, confidence, margin, entropy = prediction_stats(probabilities)
    Prediction.objects.bulk_create(
        [
            Prediction(
                image_id=int(image_id),
                model_version=version,
                probabilities=[round(float(x), 6) for x in row],
                predicted_class_id=int(column_class[top[i]]),
                confidence=float(confidence[i]),
                margin=float(margin[i]),
                entropy=float(entropy[i]),
            )
            for i, (image_id, row) in enumerate(zip(ids, probabilities, strict=True))
        ],
        update_conflicts=True,
        unique_fields=["image", "model_version"],
        update_fields=["probabilities", "predicted_class", "confidence", "margin", "entropy", "created_at"],
    )

"""Scoring the image pool with a model version (the inference queue's worker side): a worker claims a queued
ScoringJob, writes one Prediction per (image, version) and reports its progress as the job's heartbeats."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
from django.conf import settings
from django.db.models import Exists, OuterRef

from annotation.models import CellClass, CellImage
from core.jobs import JobStatus, job_claim, job_finish, job_heartbeat
from core.storage import storage_local_paths
from inference.ensembles import ensemble_get
from inference.models import Prediction, ScoringJob
from inference.services.selection import queue_priorities_update
from training.ml.scoring import ensemble_score_stream
from training.ml.uncertainty import prediction_stats
from training.models import ModelVersion

_logger = logging.getLogger(__name__)

SCORING_CHUNK = 512  # images written back (and progress reported) per round
SCORING_LOADER_CHUNK = 8192  # images per DataLoader (worker start-up amortised)


def scoring_pool(*, model_version: ModelVersion, scope: str):
    """The images a pass of `scope` scores: the whole pool, or those without a prediction of the version."""
    images = CellImage.objects.all()
    if scope == ScoringJob.Scope.MISSING:
        images = images.exclude(Exists(Prediction.objects.filter(model_version=model_version, image=OuterRef("pk"))))
    return images


def image_id_chunks(*, images, chunk: int) -> Iterator[list[tuple[int, str]]]:
    """(id, file) pairs of `images` in id order, `chunk` at a time (pool scoring and the embedding index)."""
    # Keyset pagination over ids: only one chunk of (id, file) pairs is ever in memory, and images
    # imported while a pass runs are picked up if their id is past the cursor.
    last = 0
    while True:
        rows = list(images.filter(id__gt=last).order_by("id").values_list("id", "file")[:chunk])
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _predictions_write(
    *, model_version: ModelVersion, rows: list[tuple[int, str]], probabilities: np.ndarray, column_class: list[int]
) -> None:
    """Upsert one Prediction per (image id, file) row from its calibrated probabilities."""
    top, confidence, margin, entropy = prediction_stats(probabilities)
    Prediction.objects.bulk_create(
        [
            Prediction(
                image_id=image_id,
                model_version=model_version,
                probabilities=[float(x) for x in row],
                predicted_class_id=column_class[int(top[i])],
                confidence=float(confidence[i]),
                margin=float(margin[i]),
                entropy=float(entropy[i]),
            )
            for i, ((image_id, _), row) in enumerate(zip(rows, probabilities, strict=True))
        ],
        update_conflicts=True,
        unique_fields=["image", "model_version"],
        update_fields=["probabilities", "predicted_class", "confidence", "margin", "entropy", "created_at"],
    )


def scoring_job_run(
    *,
    job_id: int,
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
    chunk: int = SCORING_CHUNK,
) -> ScoringJob | None:
    """Claim a queued scoring job and score its pool (the whole pool, or the images without a prediction of the
    version) with the version's calibrated ensemble, upserting one Prediction per image.

    Returns the finished job; None when the job was not queued (a redelivered task, or a job already reaped).
    A failure fails the job with its message and is raised again, so the task records it too.

    Args:
        job_id: the queued ScoringJob.
        batch_size: images per forward pass.
        on_progress: called after each chunk with (images scored, images in the pool).
        chunk: images written back and reported (the job's heartbeat) per round; the DataLoader spans
            SCORING_LOADER_CHUNK.
    """
    job = job_claim(model=ScoringJob, job_id=job_id)
    if job is None:
        return None
    model_version = job.model_version
    images = scoring_pool(model_version=model_version, scope=job.scope)
    total = images.count()
    done = 0
    try:
        job_heartbeat(job=job, done=0, total=total)
        ensemble = ensemble_get(model_version=model_version)
        class_ids = dict(CellClass.objects.filter(code__in=ensemble.classes).values_list("code", "id"))
        missing = [code for code in ensemble.classes if code not in class_ids]
        if missing:
            raise ValueError(f"Model classes not in the taxonomy: {', '.join(missing)}")
        column_class = [class_ids[code] for code in ensemble.classes]
        for rows in image_id_chunks(images=images, chunk=max(chunk, SCORING_LOADER_CHUNK)):
            # One DataLoader per SCORING_LOADER_CHUNK images (starting decoding workers costs a pipeline's
            # worth of idle device time), written back and reported every `chunk` images. Decoding runs in the
            # workers (or, decoder "device", batched on the GPU), overlapped with the forward passes.
            stream = ensemble_score_stream(
                ensemble,
                [str(path) for path in storage_local_paths(names=[file for _, file in rows])],
                batch_size=batch_size,
                decoder=settings.HEMALOOP_SCORING_DECODER,
            )
            written, pending = 0, []
            for batch in stream:
                pending.append(batch)
                scored = written + sum(len(b) for b in pending)
                if scored - written >= chunk or scored == len(rows):
                    probabilities = np.concatenate(pending)
                    _predictions_write(
                        model_version=model_version,
                        rows=rows[written:scored],
                        probabilities=probabilities,
                        column_class=column_class,
                    )
                    written, pending = scored, []
                    done += len(probabilities)
                    # The pool may grow while it is scored: the total never reads less than what is done.
                    total = max(total, done)
                    if not job_heartbeat(job=job, done=done, total=total):
                        # Reaped or cancelled meanwhile: what is written stays, the job keeps its outcome.
                        _logger.warning("scoring job %s is no longer running; stopping", job.pk)
                        job.refresh_from_db()
                        return job
                    if on_progress is not None:
                        on_progress(done, total)
    except Exception as exc:
        _logger.exception("scoring job %s (model version %s) failed", job.pk, model_version.pk)
        job_finish(job=job, status=JobStatus.FAILED, error=str(exc))
        raise
    return job_finish(job=job, status=JobStatus.SUCCEEDED, done=done, total=total)


def scoring_job_process(*, job_id: int) -> str:
    """What the inference queue's task does: run the scoring job, then re-order the labeling queue by its
    predictions if its version is the active one. Returns what it did, for the task's result."""
    job = scoring_job_run(job_id=job_id)
    if job is None:
        return "not queued"
    version = job.model_version
    version.refresh_from_db(fields=["status"])
    # A candidate is scored for its review list only; the queue follows the active model alone.
    if job.status != JobStatus.SUCCEEDED or version.status != ModelVersion.Status.ACTIVE:
        return f"scored {job.done}"
    chosen = queue_priorities_update(model_version=version)
    return f"scored {job.done}, prioritised {len(chosen)}"

"""Scoring the image pool with a model version (the inference queue's worker side): one Prediction per (image,
version), progress in the version's ScoringJob row, and failing the jobs whose worker died."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation.models import CellClass, CellImage
from inference.ensembles import ensemble_get
from inference.models import Prediction, ScoringJob
from training.ml.scoring import ensemble_score_stream
from training.ml.uncertainty import prediction_stats
from training.models import ModelVersion

_logger = logging.getLogger(__name__)

SCORING_CHUNK = 512  # images written back (and progress reported) per round
SCORING_LOADER_CHUNK = 8192  # images per DataLoader (worker start-up amortised)


# A scoring job that has not reported for this long lost its worker: it is failed and stops blocking a rescore.
SCORING_STALE_AFTER = timedelta(minutes=30)
UNFINISHED = (ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING)


def scoring_pool(*, model_version: ModelVersion, scope: str):
    """The images a pass of `scope` scores: the whole pool, or those without a prediction of the version."""
    images = CellImage.objects.all()
    if scope == ScoringJob.Scope.MISSING:
        images = images.exclude(Exists(Prediction.objects.filter(model_version=model_version, image=OuterRef("pk"))))
    return images


def _id_chunks(*, images, chunk: int) -> Iterator[list[tuple[int, str]]]:
    # Keyset pagination over ids: only one chunk of (id, file) pairs is ever in memory, and images
    # imported while scoring runs are picked up if their id is past the cursor.
    last = 0
    while True:
        rows = list(images.filter(id__gt=last).order_by("id").values_list("id", "file")[:chunk])
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _job_claim(*, model_version: ModelVersion) -> ScoringJob:
    """The version's oldest queued job (started from the page or an import, so the page showed it before a worker
    took it), now running; or a new whole-pool job when none is queued (a version was just activated)."""
    with transaction.atomic():
        job = (
            ScoringJob.objects.select_for_update(skip_locked=True)
            .filter(model_version=model_version, status=ScoringJob.Status.QUEUED)
            .order_by("id")
            .first()
        )
        now = timezone.now()
        if job is None:
            return ScoringJob.objects.create(
                model_version=model_version, status=ScoringJob.Status.RUNNING, running_at=now
            )
        job.status = ScoringJob.Status.RUNNING
        job.running_at = job.updated_at = now
        job.save(update_fields=["status", "running_at", "updated_at"])
    return job


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


def pool_score(
    *,
    model_version: ModelVersion,
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
    chunk: int = SCORING_CHUNK,
) -> int:
    """Score every image of the pool (unlabeled ones for the queue, labeled ones for the review list) with the
    version's calibrated ensemble, upserting one Prediction per image; returns how many were scored.

    Progress goes to `on_progress(done, total)` and to a ScoringJob row of the version: the oldest queued one
    (whose scope may limit the pass to images without a prediction of the version), else a new whole-pool job.

    Args:
        model_version: the version whose ensemble scores the pool.
        batch_size: images per forward pass.
        on_progress: called after each chunk with (images scored, images in the pool).
        chunk: images written back and reported per round (the DataLoader spans SCORING_LOADER_CHUNK).
    """
    job = _job_claim(model_version=model_version)
    images = scoring_pool(model_version=model_version, scope=job.scope)
    total = images.count()
    ScoringJob.objects.filter(pk=job.pk).update(total=total)
    done = 0
    try:
        ensemble = ensemble_get(model_version=model_version)
        class_ids = dict(CellClass.objects.filter(code__in=ensemble.classes).values_list("code", "id"))
        missing = [code for code in ensemble.classes if code not in class_ids]
        if missing:
            raise ValueError(f"Model classes not in the taxonomy: {', '.join(missing)}")
        column_class = [class_ids[code] for code in ensemble.classes]
        for rows in _id_chunks(images=images, chunk=max(chunk, SCORING_LOADER_CHUNK)):
            # One DataLoader per SCORING_LOADER_CHUNK images (starting decoding workers costs a pipeline's
            # worth of idle device time), written back and reported every `chunk` images. Decoding runs in the
            # workers (or, decoder "device", batched on the GPU), overlapped with the forward passes.
            stream = ensemble_score_stream(
                ensemble,
                [default_storage.path(file) for _, file in rows],
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
                    ScoringJob.objects.filter(pk=job.pk).update(done=done, total=total, updated_at=timezone.now())
                    if on_progress is not None:
                        on_progress(done, total)
    except Exception as exc:
        _logger.exception("scoring the pool with model version %s failed", model_version.pk)
        now = timezone.now()
        ScoringJob.objects.filter(pk=job.pk).update(
            status=ScoringJob.Status.FAILED, error=str(exc), finished_at=now, updated_at=now
        )
        raise
    now = timezone.now()
    ScoringJob.objects.filter(pk=job.pk).update(
        status=ScoringJob.Status.SUCCEEDED, done=done, total=total, finished_at=now, updated_at=now
    )
    return done


def scoring_jobs_fail_stale() -> int:
    """Mark failed every queued or running job that stopped reporting (its worker died or never came)."""
    now = timezone.now()
    count = ScoringJob.objects.filter(status__in=UNFINISHED, updated_at__lt=now - SCORING_STALE_AFTER).update(
        status=ScoringJob.Status.FAILED,
        finished_at=now,
        updated_at=now,
        error=f"The job stopped reporting for {SCORING_STALE_AFTER}; its worker probably died.",
    )
    if count:
        _logger.warning("marked %d stale scoring job(s) failed", count)
    return count

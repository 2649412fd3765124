"""Scoring the image pool with a model version, and the active-learning order of the labeling queue.

`pool_score` writes one Prediction per (image, version); `queue_priorities_update` turns the ACTIVE version's
predictions into CellImage.priority (the labeling queue orders by -priority), and
`queue_priorities_cold_start` spreads the first labels across cases while no model is active.
`scoring_start` (the Rescore button), `queue_priorities_refresh_start` (Apply now), `al_settings_update` (the
admin's settings), `queue_after_import` (the import hook) and `inference_after_activation` (the activation hook)
start those from the pages, the import and the Training page.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation.models import CellClass, CellImage, ImportBatch, LabelStatus
from core.roles import Role, user_has_role
from inference.models import ActiveLearningSettings, Prediction, ScoringJob
from inference.selectors import al_settings_get
from training.ml.ensemble import load_ensemble
from training.ml.scoring import ensemble_score_stream
from training.ml.uncertainty import prediction_stats, spread_exploration
from training.models import ModelVersion

_logger = logging.getLogger(__name__)

SCORING_CHUNK = 512  # images written back (and progress reported) per round
SCORING_LOADER_CHUNK = 8192  # images per DataLoader (worker start-up amortised)
STRATEGIES = ("margin", "entropy", "least_confidence", "random")
# The uncertainty order of each strategy as a database ordering: most uncertain first, ties by image id.
_UNCERTAINTY_ORDER = {
    "margin": ("margin", "image_id"),
    "entropy": ("-entropy", "image_id"),
    "least_confidence": ("confidence", "image_id"),
}


# A scoring job that has not reported for this long lost its worker: it is failed and stops blocking a rescore.
SCORING_STALE_AFTER = timedelta(minutes=30)
UNFINISHED = (ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING)


class SelectionRefused(ValueError):
    """The selection cannot run as asked (unknown strategy, bad share, a version that is not active)."""


class ScoringRefused(ValueError):
    """A rescore cannot start (no active model, another pass still running); the message says why."""


def _admin_check(*, user: AbstractBaseUser, action: str) -> None:
    if not user_has_role(user, Role.ADMIN):
        raise PermissionDenied(f"Only admins may {action}.")


# --- scoring ---------------------------------------------------------------------------------------


def _pool(*, model_version: ModelVersion, scope: str):
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
    images = _pool(model_version=model_version, scope=job.scope)
    total = images.count()
    ScoringJob.objects.filter(pk=job.pk).update(total=total)
    done = 0
    try:
        ensemble = load_ensemble(Path(settings.MEDIA_ROOT) / model_version.out_dir)
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


def _scoring_enqueue(*, model_version: ModelVersion, scope: str, actor: AbstractBaseUser | None) -> ScoringJob:
    # Imported here because the task module imports this one.
    from inference.tasks import pool_score as pool_score_task

    job = ScoringJob.objects.create(
        model_version=model_version,
        status=ScoringJob.Status.QUEUED,
        scope=scope,
        started_by=actor,
        total=_pool(model_version=model_version, scope=scope).count(),
    )
    # robust: a broker that cannot be reached (an import command run without one) must not undo the caller's
    # work; the job then stays queued until it goes stale, and Rescore starts it again.
    transaction.on_commit(lambda: pool_score_task.delay(model_version.pk), robust=True)
    return job


def scoring_start(*, actor: AbstractBaseUser) -> ScoringJob:
    """Queue a whole-pool rescore with the active version on the inference queue (the Rescore button).

    Refused without an active version, or while another scoring pass is queued or running.
    """
    _admin_check(user=actor, action="start scoring")
    scoring_jobs_fail_stale()
    with transaction.atomic():
        # The active version's row lock keeps two clicks from queueing two passes.
        version = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
        if version is None:
            raise ScoringRefused("No model version is active: activate one on the Training page first.")
        busy = ScoringJob.objects.filter(status__in=UNFINISHED).order_by("id").first()
        if busy is not None:
            raise ScoringRefused(
                f"Scoring job {busy.pk} (model version {busy.model_version_id}) is still "
                f"{busy.get_status_display().lower()}; wait for it to finish."
            )
        return _scoring_enqueue(model_version=version, scope=ScoringJob.Scope.ALL, actor=actor)


# --- selection -------------------------------------------------------------------------------------


def _priorities_write(*, chosen: list[int]) -> int:
    # One UPDATE resets the rest; the chosen ones get descending priorities, first chosen highest.
    n = len(chosen)
    with transaction.atomic():
        CellImage.objects.exclude(priority=0.0).update(priority=0.0)
        CellImage.objects.bulk_update(
            [CellImage(id=image_id, priority=float(n - rank)) for rank, image_id in enumerate(chosen)],
            ["priority"],
            batch_size=500,
        )
    return n


def queue_priorities_update(
    *,
    model_version: ModelVersion,
    strategy: str | None = None,
    exploration: float | None = None,
    max_class_share: float | None = None,
    top_n: int | None = None,
    seed: int = 0,
) -> list[int]:
    """Order the labeling queue by the active version's uncertainty; returns the chosen image ids in queue order.

    Among images that still need labels and have a prediction of `model_version`, the most uncertain ones
    (strategy: margin, entropy, least_confidence or random) are picked until `top_n`, skipping a candidate
    whose predicted class already holds `max_class_share` of the picks; an `exploration` share of the
    picks is drawn at random from the rest. The chosen get priority top_n - rank; every other image 0.
    None arguments read the admin's ActiveLearningSettings.

    Args:
        model_version: the ACTIVE version (predictions of other versions never count).
        strategy: uncertainty measure.
        exploration: share of the picks drawn at random, 0..1.
        max_class_share: most picks one predicted class may take, 0..1.
        top_n: how many images get a priority.
        seed: makes the random parts reproducible.
    """
    chosen_settings = al_settings_get()
    strategy = chosen_settings.strategy if strategy is None else strategy
    exploration = float(chosen_settings.exploration if exploration is None else exploration)
    max_class_share = float(chosen_settings.max_class_share if max_class_share is None else max_class_share)
    top_n = int(chosen_settings.top_n if top_n is None else top_n)
    if strategy not in STRATEGIES:
        raise SelectionRefused(f"Unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    if not 0.0 <= exploration <= 1.0 or not 0.0 < max_class_share <= 1.0 or top_n < 0:
        raise SelectionRefused("exploration must be in [0, 1], max_class_share in (0, 1] and top_n >= 0.")
    model_version.refresh_from_db(fields=["status"])
    if model_version.status != ModelVersion.Status.ACTIVE:
        raise SelectionRefused(f"Model version {model_version.pk} is not active; only the active one sets priorities.")

    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    candidates = Prediction.objects.filter(model_version=model_version, image__label_status=LabelStatus.NEEDS_LABELS)
    target = min(top_n, candidates.count())
    n_explore = round(exploration * target)
    n_exploit = target - n_explore
    cap = max(1, math.floor(max_class_share * target + 1e-9))

    if strategy == "random":
        rows = list(candidates.values_list("image_id", "predicted_class_id"))
        rows.sort()
        rng.shuffle(rows)
        ranked: Iterator[tuple[int, int]] = iter(rows)
    else:
        # Streamed from the database in uncertainty order; usually only the head is read.
        ranked = (
            candidates.order_by(*_UNCERTAINTY_ORDER[strategy])
            .values_list("image_id", "predicted_class_id")
            .iterator(chunk_size=2000)
        )
    exploit: list[int] = []
    per_class: dict[int, int] = {}
    for image_id, class_id in ranked:
        if len(exploit) >= n_exploit:
            break
        if per_class.get(class_id, 0) >= cap:
            continue  # over-represented: the next candidate of another class takes the place
        per_class[class_id] = per_class.get(class_id, 0) + 1
        exploit.append(image_id)

    explore: list[int] = []
    if n_explore:
        picked = set(exploit)
        rest = sorted(set(candidates.values_list("image_id", flat=True)) - picked)
        explore = rng.sample(rest, min(n_explore, len(rest)))
    chosen = spread_exploration(exploit, explore)
    _priorities_write(chosen=chosen)
    return chosen


def queue_priorities_cold_start(*, seed: int = 0) -> list[int]:
    """Without an active model: a stratified random order across cases (round-robin over cases in random order,
    random within each case), so the first labels cover many patients; returns image ids in queue order.

    Args:
        seed: makes the order reproducible.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible order, not a secret
    by_case: dict[int | None, list[int]] = {}
    pending = CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS).order_by("id")
    for image_id, case_id in pending.values_list("id", "case_id"):
        by_case.setdefault(case_id, []).append(image_id)
    cases = sorted(by_case, key=lambda case: (case is None, case or 0))
    rng.shuffle(cases)
    queues = []
    for case in cases:
        images = by_case[case]
        rng.shuffle(images)
        queues.append(images)
    chosen = []
    for rank in range(max((len(q) for q in queues), default=0)):
        chosen.extend(q[rank] for q in queues if rank < len(q))
    _priorities_write(chosen=chosen)
    return chosen


def queue_priorities_refresh() -> tuple[str, list[int]]:
    """Re-order the labeling queue now: by the active version's predictions and the current settings, or by the
    cold start when no version is active; returns ("active" or "cold start", the chosen image ids)."""
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if version is None:
        return "cold start", queue_priorities_cold_start()
    return "active", queue_priorities_update(model_version=version)


def queue_priorities_refresh_start(*, actor: AbstractBaseUser) -> ModelVersion | None:
    """Queue `queue_priorities_refresh` on the inference queue (the Apply now button), after the caller commits.

    Returns the version the task will order by as things stand (None: the cold start); the task reads the active
    version and the settings again when it runs, so a change made in between counts.
    """
    _admin_check(user=actor, action="re-order the labeling queue")
    # Imported here because the task module imports this one.
    from inference.tasks import queue_priorities_refresh as queue_priorities_refresh_task

    transaction.on_commit(queue_priorities_refresh_task.delay)
    _logger.info("labeling queue re-order queued by %s", actor)
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


# --- settings and hooks ----------------------------------------------------------------------------

AL_SETTINGS_FIELDS = ("strategy", "exploration", "max_class_share", "top_n", "review_min_confidence")


def al_settings_update(*, actor: AbstractBaseUser, **values) -> ActiveLearningSettings:
    """Change the active-learning settings (any of AL_SETTINGS_FIELDS); ValidationError names a bad value."""
    _admin_check(user=actor, action="change the active-learning settings")
    unknown = set(values) - set(AL_SETTINGS_FIELDS)
    if unknown:
        raise ValueError(f"Unknown settings: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        al_settings_get()
        row = ActiveLearningSettings.objects.select_for_update().get(pk=ActiveLearningSettings.SINGLETON_ID)
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_by = actor
        row.full_clean()
        row.save()
    _logger.info("active-learning settings changed by %s: %s", actor, values)
    return row


def queue_after_import(*, batch: ImportBatch) -> str:
    """After an import: with an active version, queue scoring of the images it has not scored yet (the task then
    re-orders the queue); without one, a cold-start order across cases. Returns what it did, for the log."""
    if not batch.imported:
        return "nothing imported"
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if version is None:
        return f"cold start over {len(queue_priorities_cold_start(seed=batch.pk))} images"
    with transaction.atomic():
        # A pass already queued or running for this version reaches the new images too (they sort after its cursor).
        if ScoringJob.objects.filter(model_version=version, status__in=UNFINISHED).exists():
            return f"model version {version.pk} is already scoring"
        job = _scoring_enqueue(model_version=version, scope=ScoringJob.Scope.MISSING, actor=None)
    return f"scoring job {job.pk} queued for model version {version.pk}"


def inference_after_activation(*, model_version: ModelVersion) -> None:
    """The activation hook, called inside the transaction that makes `model_version` active. Once it commits: the
    heatmaps cached for the versions it retired are deleted, and the pool is re-scored on the inference queue
    (the task then re-orders the labeling queue)."""
    # Imported here: the task module imports this one, and explain imports training.services (through
    # training.selectors), which imports this one.
    from inference.explain import heatmap_cache_prune
    from inference.tasks import pool_score as pool_score_task

    # robust: a cache left on disk must not keep the pool from being re-scored.
    transaction.on_commit(heatmap_cache_prune, robust=True)
    transaction.on_commit(lambda: pool_score_task.delay(model_version.pk))

"""Read-side queries over predictions: the confident-disagreement review list, scoring jobs and their progress, and
the active-learning settings."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import F, QuerySet, Sum

from annotation.models import LabelStatus
from annotation.selectors.blinding import images_hidden_from
from core.jobs import UNFINISHED, job_is_stale, job_progress
from inference.models import (
    ActiveLearningSettings,
    EmbeddingJob,
    EmbeddingSpace,
    HeadRefreshJob,
    Prediction,
    ScoringJob,
)
from training.models import ModelVersion
from training.selectors import model_version_active


def al_settings_get() -> ActiveLearningSettings:
    """The single settings row; the first read creates it from the HEMALOOP_AL_* Django settings (initial values
    for a new site), so every later change is the admin's and survives restarts."""
    row, _ = ActiveLearningSettings.objects.get_or_create(
        pk=ActiveLearningSettings.SINGLETON_ID,
        defaults={
            "strategy": settings.HEMALOOP_AL_STRATEGY,
            "exploration": settings.HEMALOOP_AL_EXPLORATION,
            "max_class_share": settings.HEMALOOP_AL_MAX_CLASS_SHARE,
            "top_n": settings.HEMALOOP_AL_TOP_N,
            "review_min_confidence": settings.HEMALOOP_AL_REVIEW_MIN_CONFIDENCE,
            "cold_start": settings.HEMALOOP_AL_COLD_START,
        },
    )
    return row


def review_list_confident_disagreements(
    *, model_version: ModelVersion, min_confidence: float = 0.9
) -> QuerySet[Prediction]:
    """Predictions of finally labeled images where the model confidently says another class (possible label
    errors worth a second look), most confident first."""
    return (
        Prediction.objects.filter(
            model_version=model_version, image__label_status=LabelStatus.FINAL, confidence__gte=min_confidence
        )
        .exclude(predicted_class=F("image__final_label"))
        .select_related("image", "image__final_label", "predicted_class")
        .order_by("-confidence", "image_id")
    )


def scoring_job_latest(*, model_version: ModelVersion) -> ScoringJob | None:
    """The version's most recent scoring pass (queued, running or finished), for a progress display."""
    return ScoringJob.objects.filter(model_version=model_version).order_by("-requested_at", "-id").first()


def scoring_job_list(*, limit: int = 10) -> list[ScoringJob]:
    """The most recent scoring passes of any version, newest first."""
    return list(
        ScoringJob.objects.select_related("model_version", "requested_by").order_by("-requested_at", "-id")[:limit]
    )


def scoring_job_get(*, job_id: int) -> ScoringJob | None:
    return ScoringJob.objects.filter(pk=job_id).first()


def scoring_job_unfinished(*, model_version: ModelVersion | None = None, scope: str | None = None) -> ScoringJob | None:
    """The oldest pass (of the version, of the scope) still queued or running, ignoring running ones whose worker
    stopped reporting: the reaper fails those, and they must not block a new pass until it does."""
    jobs = ScoringJob.objects.filter(status__in=UNFINISHED).order_by("id")
    if model_version is not None:
        jobs = jobs.filter(model_version=model_version)
    if scope is not None:
        jobs = jobs.filter(scope=scope)
    return next((job for job in jobs if not job_is_stale(job)), None)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _speed_line(*, job: ScoringJob | EmbeddingJob, progress: dict) -> str:
    rate, left = progress["per_second"], progress["eta_seconds"]
    if not rate:
        return ""
    shown = f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"
    if job.is_finished and job.finished_at and job.started_at:
        seconds = (job.finished_at - job.started_at).total_seconds()
        return f"{job.done:,} images in {_duration(seconds)} · {shown} images/s"
    if left is None:
        return f"{shown} images/s"
    return f"{shown} images/s · about {_duration(left)} left"


def scoring_job_progress(*, job: ScoringJob, now: datetime | None = None) -> dict:
    """What the progress bar shows (and the JSON endpoint and the API return) for one scoring pass: the common
    job progress (core.jobs.job_progress; the rate counts from when a worker took the job), the version, the scope
    and the line the page shows under the bar."""
    progress = job_progress(job, now=now)
    return {
        **progress,
        "model_version": job.model_version_id,
        "scope": job.scope,
        "speed": _speed_line(job=job, progress=progress),
    }


def review_list(*, viewer, model_version: ModelVersion | None = None) -> QuerySet[Prediction]:
    """The review list as `viewer` sees it: the active version's confident disagreements at the admin's threshold
    (empty without an active version), without the cells hidden from them (annotation.selectors.blinding)."""
    model_version = model_version or model_version_active()
    if model_version is None:
        return Prediction.objects.none()
    return review_list_confident_disagreements(
        model_version=model_version, min_confidence=al_settings_get().review_min_confidence
    ).exclude(image__in=images_hidden_from(user=viewer).values("pk"))


def embedding_job_list(*, limit: int = 5) -> list[EmbeddingJob]:
    """The most recent embedding passes (the index), newest first."""
    return list(EmbeddingJob.objects.select_related("space", "requested_by").order_by("-requested_at", "-id")[:limit])


def embedding_job_get(*, job_id: int) -> EmbeddingJob | None:
    return EmbeddingJob.objects.filter(pk=job_id).first()


def embedding_job_progress(*, job: EmbeddingJob, now: datetime | None = None) -> dict:
    """A pass's progress in images: the common job progress, the space and the speed line, as for scoring."""
    progress = job_progress(job, now=now)
    return {**progress, "space": job.space.key, "speed": _speed_line(job=job, progress=progress)}


def index_space_list() -> list[EmbeddingSpace]:
    """The index spaces with how many images each holds, for the Scoring page."""
    return list(EmbeddingSpace.objects.annotate(images=Sum("shards__count")).order_by("id"))


def head_refresh_list(*, limit: int = 10) -> list[HeadRefreshJob]:
    """The most recent queue refreshes, newest first."""
    return list(
        HeadRefreshJob.objects.select_related("model_version", "requested_by").order_by("-requested_at", "-id")[:limit]
    )


def head_refresh_get(*, job_id: int) -> HeadRefreshJob | None:
    return HeadRefreshJob.objects.filter(pk=job_id).first()


def head_refresh_progress(*, job: HeadRefreshJob, now: datetime | None = None) -> dict:
    """A refresh's progress (its Prediction rows once the head is trained) and what it did (`selection`: which branch
    of training.ml.selection.select_next ordered the queue)."""
    progress = job_progress(job, now=now)
    return {
        **progress,
        "outcome": job.outcome,
        "model_version": job.model_version_id,
        "selection": job.selection,
        "speed": job.outcome,
    }

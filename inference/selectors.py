"""Read-side queries over predictions: the confident-disagreement review list, scoring progress and the
active-learning settings."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import F, QuerySet
from django.utils import timezone

from annotation.models import LabelStatus
from inference.models import ActiveLearningSettings, Prediction, ScoringJob
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
    """The version's most recent scoring pass (running or finished), for a progress display."""
    return ScoringJob.objects.filter(model_version=model_version).order_by("-started_at", "-id").first()


def scoring_job_list(*, limit: int = 10) -> list[ScoringJob]:
    """The most recent scoring passes of any version, newest first."""
    return list(ScoringJob.objects.select_related("model_version", "started_by").order_by("-started_at", "-id")[:limit])


def scoring_job_get(*, job_id: int) -> ScoringJob | None:
    return ScoringJob.objects.filter(pk=job_id).first()


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def scoring_job_speed(*, job: ScoringJob, now: datetime | None = None) -> tuple[float | None, float | None, str]:
    """(images/s since a worker took the job, seconds left while it runs, the line the page shows)."""
    if job.running_at is None or not job.done:
        return None, None, ""
    end = job.finished_at if job.is_finished and job.finished_at else (now or timezone.now())
    seconds = (end - job.running_at).total_seconds()
    if seconds <= 0:
        return None, None, ""
    rate = job.done / seconds
    shown = f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"
    if job.is_finished:
        return rate, None, f"{job.done:,} images in {_duration(seconds)} · {shown} images/s"
    left = max(0, job.total - job.done) / rate
    return rate, left, f"{shown} images/s · about {_duration(left)} left"


def scoring_job_progress(*, job: ScoringJob) -> dict:
    """What the progress bar shows (and the JSON endpoint returns) for one scoring pass."""
    rate, left, speed = scoring_job_speed(job=job)
    return {
        "id": job.pk,
        "model_version": job.model_version_id,
        "status": job.status,
        "status_display": job.get_status_display(),
        "scope": job.scope,
        "done": job.done,
        "total": job.total,
        "percent": job.percent,
        "finished": job.is_finished,
        "error": job.error,
        "images_per_second": None if rate is None else round(rate, 1),
        "seconds_left": None if left is None else round(left),
        "speed": speed,
    }


def review_list(*, model_version: ModelVersion | None = None) -> QuerySet[Prediction]:
    """The review list as the pages show it: the active version's confident disagreements at the admin's threshold
    (empty without an active version)."""
    model_version = model_version or model_version_active()
    if model_version is None:
        return Prediction.objects.none()
    return review_list_confident_disagreements(
        model_version=model_version, min_confidence=al_settings_get().review_min_confidence
    )

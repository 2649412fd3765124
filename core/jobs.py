"""One mechanism for background jobs: an abstract row that is the authoritative state of a job (status, who asked,
queued/started/heartbeat/finished times, done/total, error), the helpers that move it through its states, one
progress JSON shape for every page and API, and the stale-job reaper that a periodic task runs.

Imports, dataset archives, scoring passes and training runs are all jobs. A job's task is sent once its row commits,
and a broker that cannot be reached fails the row at once (`job_send_on_commit`). A worker claims a queued row with
one conditional UPDATE (so a task delivered twice runs once), reports progress with heartbeats, and finishes it; a
running row whose heartbeats stopped for longer than the model's STALE_AFTER is failed by the reaper, never by a
page view.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

_logger = logging.getLogger(__name__)


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    """The state every background job shares. Subclasses add what the job works on and its own results."""

    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    # When a worker claimed it: the start of the rate and the time left.
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    # A running job without a heartbeat for this long lost its worker. Subclasses whose steps take longer
    # between heartbeats raise it, or override stale_after() to read a setting.
    STALE_AFTER: ClassVar[timedelta] = timedelta(minutes=30)
    # What the progress JSON calls this kind of job.
    JOB_KIND: ClassVar[str] = "job"

    class Meta:
        abstract = True

    @classmethod
    def stale_after(cls) -> timedelta:
        return cls.STALE_AFTER

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def percent(self) -> int:
        if self.status == JobStatus.SUCCEEDED:
            return 100
        return 0 if not self.total else min(100, int(100 * self.done / self.total))


JobT = TypeVar("JobT", bound=Job)


def job_claim(*, model: type[JobT], job_id: int) -> JobT | None:
    """Move a queued job to running for this worker; None when it is not queued (cancelled, or already taken by a
    redelivered copy of the task), so the caller simply returns."""
    now = timezone.now()
    claimed = model.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, error=""
    )
    return model.objects.get(pk=job_id) if claimed else None


def job_send_on_commit(*, job: Job, task: Any) -> None:
    """Send `task(job.pk)` to the workers once the caller's transaction commits.

    A broker that cannot be reached fails the job at once, with the reason: the request that queued it stands (its
    response does not turn into an error after its data committed), and the row does not stay queued for a worker
    that will never hear of it (a queued run would also block the next one). Whoever asked sees why on the job's
    page and may ask again.
    """

    def send() -> None:
        if task.app.conf.task_always_eager:
            task.delay(job.pk)  # the task runs here (tests): what it raises is its own error, not the broker's
            return
        try:
            task.delay(job.pk)
        # Redis down raises kombu's OperationalError from the broker, or, first, a RuntimeError from the Redis result
        # backend's subscription; whatever fails here fails before the message is published.
        except Exception as exc:  # noqa: BLE001 - any failure to send means no worker will run the job
            _logger.exception("could not queue %s %s", job.JOB_KIND, job.pk)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            job_finish(job=job, status=JobStatus.FAILED, error=f"Could not reach the task queue: {reason}")

    transaction.on_commit(send, robust=True)


def job_heartbeat(*, job: Job, done: int | None = None, total: int | None = None, **fields: Any) -> bool:
    """Record progress on a running job (and any of the subclass's own fields). False when the job is no longer
    running (the reaper failed it, or it was cancelled): the worker should stop."""
    job.heartbeat_at = timezone.now()
    changes: dict[str, Any] = {"heartbeat_at": job.heartbeat_at, **fields}
    if done is not None:
        changes["done"] = job.done = done
    if total is not None:
        changes["total"] = job.total = total
    for name, value in fields.items():
        setattr(job, name, value)
    return bool(type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(**changes))


def job_finish(*, job: JobT, status: str, error: str = "", **fields: Any) -> JobT:
    """Finish a job that is still unfinished; a job already finished (reaped, cancelled) keeps its outcome."""
    if status not in FINISHED:
        raise ValueError(f"{status!r} is not a finished status")
    now = timezone.now()
    changes = {"status": status, "error": error, "finished_at": now, "heartbeat_at": now, **fields}
    type(job).objects.filter(pk=job.pk, status__in=UNFINISHED).update(**changes)
    job.refresh_from_db()
    return job


def job_is_stale(job: Job, *, now=None) -> bool:
    if job.status != JobStatus.RUNNING:
        return False
    last = job.heartbeat_at or job.started_at or job.requested_at
    return last < (now or timezone.now()) - type(job).stale_after()


def jobs_fail_stale(*, model: type[Job]) -> int:
    """Fail every running job of `model` whose worker stopped sending heartbeats."""
    now = timezone.now()
    stale_after = model.stale_after()
    stale = model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=now - stale_after)
    count = stale.update(
        status=JobStatus.FAILED,
        finished_at=now,
        error=f"The worker stopped reporting (no heartbeat for {stale_after}); it probably died.",
    )
    if count:
        _logger.warning("marked %d stale %s job(s) failed", count, model.JOB_KIND)
    return count


def job_models() -> list[type[Job]]:
    """Every concrete job model of the installed apps (core needs no list of the floors above it)."""
    return [model for model in apps.get_models() if issubclass(model, Job)]


def jobs_reap_stale() -> dict[str, int]:
    """Fail the stale jobs of every kind: what the periodic task runs."""
    return {model.JOB_KIND: jobs_fail_stale(model=model) for model in job_models()}


def job_progress(job: Job, *, now=None) -> dict[str, Any]:
    """The one progress shape that every job page polls and every job API returns."""
    now = now or timezone.now()
    rate = eta = None
    if job.started_at and job.done:
        elapsed = ((job.finished_at or now) - job.started_at).total_seconds()
        if elapsed > 0:
            rate = job.done / elapsed
            if job.status == JobStatus.RUNNING and job.total >= job.done:
                eta = round((job.total - job.done) / rate)
    return {
        "id": job.pk,
        "kind": job.JOB_KIND,
        "status": job.status,
        "status_display": job.get_status_display(),
        "finished": job.is_finished,
        "done": job.done,
        "total": job.total,
        "percent": job.percent,
        "per_second": round(rate, 1) if rate is not None else None,
        "eta_seconds": eta,
        "error": job.error,
        "requested_at": job.requested_at.isoformat() if job.requested_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }

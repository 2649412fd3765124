"""What queues work on the inference queue: a scoring job (Rescore, an activation, an import) and a re-order of the
labeling queue (Apply now); both enqueue after the caller commits."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from kombu.exceptions import OperationalError

from core.jobs import JobStatus, job_finish
from core.roles import Role, role_require
from inference import tasks
from inference.errors import ScoringRefused
from inference.models import ScoringJob
from inference.selectors import scoring_job_unfinished
from inference.services.scoring import scoring_pool
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)


def _scoring_job_send(job: ScoringJob) -> None:
    try:
        tasks.scoring_job_process_task.delay(job.pk)
    except OperationalError as exc:
        # A broker that cannot be reached (an import command run without one) must not undo the caller's work,
        # nor leave a queued row that no worker will ever claim and that blocks Rescore.
        _logger.exception("could not queue scoring job %s", job.pk)
        job_finish(job=job, status=JobStatus.FAILED, error=f"Could not reach the task queue: {exc}")


def scoring_enqueue(*, model_version: ModelVersion, scope: str, actor: AbstractBaseUser | None) -> ScoringJob:
    """A queued ScoringJob row (so the Scoring page shows it before a worker takes it) and its task, on commit."""
    job = ScoringJob.objects.create(
        model_version=model_version,
        scope=scope,
        requested_by=actor,
        total=scoring_pool(model_version=model_version, scope=scope).count(),
    )
    transaction.on_commit(lambda: _scoring_job_send(job), robust=True)
    return job


def scoring_start(*, actor: AbstractBaseUser) -> ScoringJob:
    """Queue a whole-pool rescore with the active version on the inference queue (the Rescore button).

    Refused without an active version, or while another scoring pass is queued or running (one whose worker
    stopped reporting does not count).
    """
    role_require(actor, Role.ADMIN, action="start scoring")
    with transaction.atomic():
        # The active version's row lock keeps two clicks from queueing two passes.
        version = model_version_active(for_update=True)
        if version is None:
            raise ScoringRefused("No model version is active: activate one on the Training page first.")
        busy = scoring_job_unfinished()
        if busy is not None:
            raise ScoringRefused(
                f"Scoring job {busy.pk} (model version {busy.model_version_id}) is still "
                f"{busy.get_status_display().lower()}; wait for it to finish."
            )
        return scoring_enqueue(model_version=version, scope=ScoringJob.Scope.ALL, actor=actor)


def queue_priorities_refresh_start(*, actor: AbstractBaseUser) -> ModelVersion | None:
    """Queue `queue_priorities_refresh` on the inference queue (the Apply now button), after the caller commits.

    Returns the version the task will order by as things stand (None: the cold start); the task reads the active
    version and the settings again when it runs, so a change made in between counts.
    """
    role_require(actor, Role.ADMIN, action="re-order the labeling queue")
    transaction.on_commit(tasks.queue_priorities_refresh.delay)
    _logger.info("labeling queue re-order queued by %s", actor)
    return model_version_active()

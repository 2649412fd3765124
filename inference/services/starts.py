"""What the admin's buttons start on the inference queue: a whole-pool rescore (Rescore) and a re-order of the
labeling queue (Apply now); both enqueue after the caller commits."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.roles import Role, role_require
from inference import tasks
from inference.errors import ScoringRefused
from inference.models import ScoringJob
from inference.services.scoring import UNFINISHED, scoring_jobs_fail_stale, scoring_pool
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)


def scoring_enqueue(*, model_version: ModelVersion, scope: str, actor: AbstractBaseUser | None) -> ScoringJob:
    """A queued ScoringJob row (so the Scoring page shows it before a worker takes it) and its task, on commit."""
    job = ScoringJob.objects.create(
        model_version=model_version,
        status=ScoringJob.Status.QUEUED,
        scope=scope,
        started_by=actor,
        total=scoring_pool(model_version=model_version, scope=scope).count(),
    )
    # robust: a broker that cannot be reached (an import command run without one) must not undo the caller's
    # work; the job then stays queued until it goes stale, and Rescore starts it again.
    transaction.on_commit(lambda: tasks.pool_score.delay(model_version.pk), robust=True)
    return job


def scoring_start(*, actor: AbstractBaseUser) -> ScoringJob:
    """Queue a whole-pool rescore with the active version on the inference queue (the Rescore button).

    Refused without an active version, or while another scoring pass is queued or running.
    """
    role_require(actor, Role.ADMIN, action="start scoring")
    scoring_jobs_fail_stale()
    with transaction.atomic():
        # The active version's row lock keeps two clicks from queueing two passes.
        version = model_version_active(for_update=True)
        if version is None:
            raise ScoringRefused("No model version is active: activate one on the Training page first.")
        busy = ScoringJob.objects.filter(status__in=UNFINISHED).order_by("id").first()
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

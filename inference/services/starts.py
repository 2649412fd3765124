"""What queues work on the inference queue: a scoring job (Rescore, an activation, an import), a re-order of the
labeling queue (Apply now), an embedding pass (the index; an import, an activation) and a queue refresh (new final
labels, Refresh now); all enqueue after the caller commits."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from core.jobs import job_send_on_commit
from core.roles import Role, role_require
from inference import tasks
from inference.errors import RefreshRefused, ScoringRefused
from inference.models import EmbeddingJob, EmbeddingSpace, HeadRefreshJob, ScoringJob
from inference.selectors import scoring_job_unfinished
from inference.services.heads import head_refresh_due, head_refresh_unfinished
from inference.services.index import embedding_job_unfinished, index_pool, index_space_get, index_spec_for
from inference.services.scoring import scoring_pool
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)


def scoring_enqueue(*, model_version: ModelVersion, scope: str, actor: AbstractBaseUser | None) -> ScoringJob:
    """A queued ScoringJob row (so the Scoring page shows it before a worker takes it) and its task, on commit."""
    job = ScoringJob.objects.create(
        model_version=model_version,
        scope=scope,
        requested_by=actor,
        total=scoring_pool(model_version=model_version, scope=scope).count(),
    )
    job_send_on_commit(job=job, task=tasks.scoring_job_process_task)
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


def index_enqueue(*, space: EmbeddingSpace, actor: AbstractBaseUser | None = None) -> EmbeddingJob | None:
    """Queue a pass over the images not yet in the space (after the caller commits); None when there are none or a
    pass of the space is already queued or running (it reaches images imported meanwhile: they sort after its
    cursor)."""
    with transaction.atomic():
        EmbeddingSpace.objects.select_for_update().get(pk=space.pk)
        if embedding_job_unfinished(space=space) is not None:
            return None
        total = index_pool(space=space).count()
        if total == 0:
            return None
        job = EmbeddingJob.objects.create(space=space, requested_by=actor, total=total)
        job_send_on_commit(job=job, task=tasks.embedding_job_process_task)
    return job


def index_enqueue_for(*, version: ModelVersion | None) -> EmbeddingJob | None:
    """`index_enqueue` for the space that serves `version` (None: the bundled backbone's)."""
    return index_enqueue(space=index_space_get(spec=index_spec_for(version)))


def head_refresh_enqueue(*, reason: str, actor: AbstractBaseUser | None = None) -> HeadRefreshJob | None:
    """Queue a refresh (after the caller commits); None while one is queued or running (it will see these labels
    too, or the next one will)."""
    if head_refresh_unfinished() is not None:
        return None
    try:
        with transaction.atomic():
            job = HeadRefreshJob.objects.create(reason=reason, requested_by=actor)
    except IntegrityError:  # another request queued one between the check and the insert
        return None
    job_send_on_commit(job=job, task=tasks.head_refresh_task)
    return job


def head_refresh_if_due(*, reason: str = HeadRefreshJob.Reason.LABELS) -> HeadRefreshJob | None:
    """Queue a refresh when HEMALOOP_HEAD_REFRESH_EVERY final labels came since the latest head (new final labels,
    an import of trusted labels)."""
    return head_refresh_enqueue(reason=reason) if head_refresh_due() else None


def head_refresh_start(*, actor: AbstractBaseUser) -> HeadRefreshJob:
    """The Refresh now button: queue a refresh whatever the count (it skips itself if no label changed)."""
    role_require(actor, Role.ADMIN, action="refresh the queue's model")
    job = head_refresh_enqueue(reason=HeadRefreshJob.Reason.REQUESTED, actor=actor)
    if job is None:
        busy = head_refresh_unfinished()
        raise RefreshRefused(f"Refresh {busy.pk if busy else ''} is still queued or running; wait for it to finish.")
    return job


def head_rescore_enqueue(*, version: ModelVersion, missing_only: bool = False) -> None:
    """Rescore the pool with an active head from the index and re-order the queue, on the inference queue."""
    transaction.on_commit(lambda: tasks.head_rescore_task.delay(version.pk, missing_only), robust=True)

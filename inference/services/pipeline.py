"""What the index and refresh tasks do, with their follow-ups: an embedding pass that grew the index records the
near-duplicates it brought, rescores the new images with an active head (without one: orders the cold start from the
index) and queues a refresh if labels came with them; a refresh that finds the index behind queues the missing images
too, and one that leaves no model active orders the cold start again.

`starts` is imported as a module: it imports the tasks, which import this module, so its functions are looked up
when called, not when either module loads.
"""

from __future__ import annotations

import logging

from core.jobs import JobStatus
from inference.models import HeadRefreshJob
from inference.services import starts
from inference.services.cold_start import queue_priorities_cold_start
from inference.services.heads import head_refresh_run, head_rescore
from inference.services.index import embedding_job_run, index_pool, index_space_get, index_spec_for
from inference.services.neighbours import near_duplicates_detect
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)


def embedding_job_process(*, job_id: int) -> str:
    """Run an embedding job; then, with an active head on this index, give the new images predictions and re-order
    the queue, and queue a refresh if enough final labels came since the last head."""
    job = embedding_job_run(job_id=job_id)
    if job is None:
        return "not queued"
    if job.status != JobStatus.SUCCEEDED:
        return f"embedded {job.done} ({job.status})"
    said = f"embedded {job.done}"
    try:
        said += f", {near_duplicates_detect(job=job)} near-duplicate pairs"
    except Exception:  # a report, not a step: the new images' scores and the refresh below must still come
        _logger.exception("near-duplicate check after embedding job %s failed", job.pk)
    active = model_version_active()
    if active is None and index_spec_for(None).key == job.space.key:
        mode, chosen = queue_priorities_cold_start()
        said += f", cold start ({mode}) over {len(chosen)}"
    if active is not None and active.is_head and index_spec_for(active).key == job.space.key:
        said += f", prioritised {len(head_rescore(version=active, missing_only=True))}"
    if starts.head_refresh_if_due(reason=HeadRefreshJob.Reason.INDEX) is not None:
        said += ", refresh queued"
    return said


def head_refresh_process(*, job_id: int) -> str:
    """Run a refresh on the index as it is; images not embedded yet are queued for the index first (their pass ends by
    checking whether another refresh is due)."""
    space = index_space_get(spec=index_spec_for(model_version_active()))
    if index_pool(space=space).exists():
        starts.index_enqueue(space=space)
    job = head_refresh_run(job_id=job_id)
    if job is None:
        return "not queued"
    said = f"{job.status}: {job.outcome or job.error}"
    if job.status == JobStatus.SUCCEEDED and model_version_active() is None:
        # No head yet (too few labels, or none activated): the cold start again, now that labels cover some cells.
        mode, chosen = queue_priorities_cold_start()
        said += f"; cold start ({mode}) over {len(chosen)}"
    return said


def head_rescore_process(*, version_id: int, missing_only: bool = False) -> str:
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None or version.status != ModelVersion.Status.ACTIVE or not version.is_head:
        return "not an active head"
    return f"prioritised {len(head_rescore(version=version, missing_only=missing_only))}"

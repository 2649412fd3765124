"""What inference does when a lower floor announces something: receivers of annotation's import_batch_finished and
training's model_version_activated, connected in InferenceConfig.ready()."""

from __future__ import annotations

import logging

from django.db import transaction

from annotation.models import ImportBatch
from inference.explain.heatmaps import heatmap_cache_prune
from inference.models import ScoringJob
from inference.selectors import scoring_job_unfinished
from inference.services.cold_start import queue_priorities_cold_start
from inference.services.starts import scoring_enqueue
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)


def queue_after_import(*, batch: ImportBatch) -> str:
    """After an import: with an active version, queue scoring of the images it has not scored yet (the task then
    re-orders the queue); without one, a cold-start order across cases. Returns what it did, for the log."""
    if not batch.imported:
        return "nothing imported"
    version = model_version_active()
    if version is None:
        return f"cold start over {len(queue_priorities_cold_start(seed=batch.pk))} images"
    with transaction.atomic():
        # A pass already queued or running for this version reaches the new images too (they sort after its cursor).
        if scoring_job_unfinished(model_version=version) is not None:
            return f"model version {version.pk} is already scoring"
        job = scoring_enqueue(model_version=version, scope=ScoringJob.Scope.MISSING, actor=None)
    return f"scoring job {job.pk} queued for model version {version.pk}"


def inference_after_activation(*, model_version: ModelVersion) -> ScoringJob | None:
    """After an activation commits: the heatmaps cached for the versions it retired are deleted, and a whole-pool
    scoring job is queued (the Scoring page shows it at once; the task then re-orders the labeling queue). None when
    a whole-pool pass of the version is already queued or running."""
    try:
        heatmap_cache_prune()
    except Exception:  # a cache left on disk must not keep the pool from being re-scored
        _logger.exception("pruning the heatmap cache after activating model version %s failed", model_version.pk)
    with transaction.atomic():
        if scoring_job_unfinished(model_version=model_version, scope=ScoringJob.Scope.ALL) is not None:
            return None
        return scoring_enqueue(
            model_version=model_version, scope=ScoringJob.Scope.ALL, actor=model_version.activated_by
        )


def on_import_batch_finished(sender, *, batch: ImportBatch, **kwargs) -> None:
    # Every file of the batch has committed; the scoring task it may queue waits for on_commit itself.
    _logger.info("import batch %s: %s", batch.pk, queue_after_import(batch=batch))


def on_model_version_activated(sender, *, model_version: ModelVersion, **kwargs) -> None:
    # Sent by training once the activation has committed.
    inference_after_activation(model_version=model_version)

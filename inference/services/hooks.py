"""What inference does when a lower floor announces something: receivers of annotation's import_batch_finished and
training's model_version_activated, connected in InferenceConfig.ready()."""

from __future__ import annotations

import logging

from django.db import transaction

from annotation.models import ImportBatch
from inference import tasks
from inference.explain.heatmaps import heatmap_cache_prune
from inference.models import ScoringJob
from inference.services.cold_start import queue_priorities_cold_start
from inference.services.scoring import UNFINISHED
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
        if ScoringJob.objects.filter(model_version=version, status__in=UNFINISHED).exists():
            return f"model version {version.pk} is already scoring"
        job = scoring_enqueue(model_version=version, scope=ScoringJob.Scope.MISSING, actor=None)
    return f"scoring job {job.pk} queued for model version {version.pk}"


def inference_after_activation(*, model_version: ModelVersion) -> None:
    """After an activation commits: the heatmaps cached for the versions it retired are deleted, and the pool is
    re-scored on the inference queue (the task then re-orders the labeling queue)."""
    try:
        heatmap_cache_prune()
    except Exception:  # a cache left on disk must not keep the pool from being re-scored
        _logger.exception("pruning the heatmap cache after activating model version %s failed", model_version.pk)
    tasks.pool_score.delay(model_version.pk)


def on_import_batch_finished(sender, *, batch: ImportBatch, **kwargs) -> None:
    # Every file of the batch has committed; the scoring task it may queue waits for on_commit itself.
    _logger.info("import batch %s: %s", batch.pk, queue_after_import(batch=batch))


def on_model_version_activated(sender, *, model_version: ModelVersion, **kwargs) -> None:
    # Sent by training once the activation has committed.
    inference_after_activation(model_version=model_version)

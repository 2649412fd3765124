"""What inference does when a lower floor announces something: receivers of annotation's import_batch_finished and
labels_finalized and training's model_version_activated, connected in InferenceConfig.ready()."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from annotation.models import ImportBatch
from inference.explain.heatmaps import heatmap_cache_prune
from inference.models import HeadRefreshJob, ScoringJob
from inference.selectors import scoring_job_unfinished
from inference.services.cold_start import queue_priorities_cold_start
from inference.services.starts import head_refresh_if_due, head_rescore_enqueue, index_enqueue_for, scoring_enqueue
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)


def queue_after_import(*, batch: ImportBatch) -> str:
    """After an import: with an active version, queue scoring of the images it has not scored yet (the task then
    re-orders the queue); without one, the cold-start order (stratified until the new images' embedding pass has run,
    which orders the queue again). Returns what it did, for the log."""
    if not batch.imported:
        return "nothing imported"
    version = model_version_active()
    if version is None:
        mode, chosen = queue_priorities_cold_start(seed=batch.pk)
        return f"cold start ({mode}) over {len(chosen)} images"
    if version.is_head:
        # A head scores from the index: the new images' embedding pass gives them predictions (index_after_import).
        return f"model version {version.pk} is a head: its index pass scores the new images"
    with transaction.atomic():
        # A pass already queued or running for this version reaches the new images too (they sort after its cursor).
        if scoring_job_unfinished(model_version=version) is not None:
            return f"model version {version.pk} is already scoring"
        job = scoring_enqueue(model_version=version, scope=ScoringJob.Scope.MISSING, actor=None)
    return f"scoring job {job.pk} queued for model version {version.pk}"


def index_after_import(*, batch: ImportBatch) -> str:
    """After an import (HEMALOOP_INDEX_AUTO): queue the embedding of the new images into the index that serves the
    active version (the bundled backbone's while none or a head is active; the first import builds it)."""
    if not settings.HEMALOOP_INDEX_AUTO or not batch.imported:
        return "index not grown"
    version = model_version_active()
    if version is not None and not version.is_head:
        # A fully trained ensemble is indexed by the refresh that first needs its features (a whole pool pass).
        return f"model version {version.pk} is a trained ensemble: its index is built by the next refresh"
    job = index_enqueue_for(version=version)
    return (
        "no pass needed (index complete, or a pass already queued)" if job is None else f"embedding job {job.pk} queued"
    )


def inference_after_activation(*, model_version: ModelVersion) -> ScoringJob | None:
    """After an activation commits: the heatmaps cached for the versions it retired are deleted, and a whole-pool
    scoring job is queued (the Scoring page shows it at once; the task then re-orders the labeling queue). None when
    a whole-pool pass of the version is already queued or running."""
    try:
        heatmap_cache_prune()
    except Exception:  # a cache left on disk must not keep the pool from being re-scored
        _logger.exception("pruning the heatmap cache after activating model version %s failed", model_version.pk)
    if model_version.is_head:
        # A head scores from the index in seconds; a refresh that activated its own head has already done so.
        if model_version.activated_by_id is not None:
            head_rescore_enqueue(version=model_version)
        return None
    with transaction.atomic():
        if scoring_job_unfinished(model_version=model_version, scope=ScoringJob.Scope.ALL) is not None:
            return None
        return scoring_enqueue(
            model_version=model_version, scope=ScoringJob.Scope.ALL, actor=model_version.activated_by
        )


def queue_after_final_labels() -> str:
    """After labels turned final (HEMALOOP_INDEX_AUTO): a refresh once HEMALOOP_HEAD_REFRESH_EVERY came since the
    latest head."""
    if not settings.HEMALOOP_INDEX_AUTO:
        return "automatic refresh off"
    job = head_refresh_if_due(reason=HeadRefreshJob.Reason.LABELS)
    return "no refresh due" if job is None else f"refresh {job.pk} queued"


def on_import_batch_finished(sender, *, batch: ImportBatch, **kwargs) -> None:
    # Every file of the batch has committed; the scoring task it may queue waits for on_commit itself.
    _logger.info("import batch %s: %s", batch.pk, queue_after_import(batch=batch))
    _logger.info("import batch %s: %s", batch.pk, index_after_import(batch=batch))


def on_labels_finalized(sender, **kwargs) -> None:
    # Sent by annotation after the label that decided a cell has committed.
    _logger.debug("final label: %s", queue_after_final_labels())


def on_model_version_activated(sender, *, model_version: ModelVersion, **kwargs) -> None:
    # Sent by training once the activation has committed.
    inference_after_activation(model_version=model_version)

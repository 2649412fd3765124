"""Failing the runs whose worker stopped sending heartbeats. Apart from training.services so the selectors, which
reap before they list, do not import the services (the services read the active version from the selectors)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from training.models import TrainingRun

_logger = logging.getLogger(__name__)


def heartbeat_stale_after() -> timedelta:
    return timedelta(minutes=settings.HEMALOOP_TRAINING_HEARTBEAT_MINUTES)


def training_runs_fail_stale() -> int:
    """Mark failed every running run whose worker stopped sending heartbeats; safe to call from anywhere, often."""
    cutoff = timezone.now() - heartbeat_stale_after()
    stale = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    count = stale.update(
        status=TrainingRun.Status.FAILED,
        finished_at=timezone.now(),
        eta_seconds=None,
        error=f"The worker stopped reporting (no heartbeat for {heartbeat_stale_after()}); it probably died.",
    )
    if count:
        _logger.warning("marked %d stale training run(s) failed", count)
    return count

"""Periodic upkeep of background jobs (the beat schedule is in config/settings/base.py)."""

from __future__ import annotations

from celery import shared_task

from core.jobs import jobs_reap_stale


@shared_task(acks_late=False, time_limit=120)
def jobs_reap_stale_task() -> dict[str, int]:
    """Fail every job whose worker stopped sending heartbeats, whatever its kind."""
    return jobs_reap_stale()

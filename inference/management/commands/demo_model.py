"""`manage.py demo_model`: at the demo's first start, build the embedding index and train the first head on the
demo's trusted labels, in-process (before the worker starts), so `make run` opens with an active model; later starts
find the head and reuse it."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from core.jobs import JobStatus
from inference.models import EmbeddingJob, HeadRefreshJob
from inference.services.heads import head_latest, head_refresh_run, head_refresh_unfinished
from inference.services.index import (
    embedding_job_run,
    embedding_job_unfinished,
    index_pool,
    index_space_get,
    index_spec_for,
)
from training.selectors import model_version_active


class Command(BaseCommand):
    help = "Build the embedding index and train the first head if no head exists yet (the demo's model). Idempotent."

    def handle(self, *args, **options):
        latest = head_latest()
        if latest is not None:
            self.stdout.write(f"demo model already trained (model version {latest.pk}, {latest.get_status_display()})")
            return
        started = time.monotonic()
        space = index_space_get(spec=index_spec_for(model_version_active()))
        if index_pool(space=space).exists():
            # The import queued this pass for the worker; running it here first leaves the worker nothing to do.
            job = embedding_job_unfinished(space=space) or EmbeddingJob.objects.create(
                space=space, total=index_pool(space=space).count()
            )
            job = embedding_job_run(job_id=job.pk)
            if job is not None and job.status != JobStatus.SUCCEEDED:
                raise CommandError(f"embedding the demo failed: {job.error}")
            self.stdout.write(f"embedding index of {space.key}: {job.done if job else 0} images")
        refresh = head_refresh_unfinished() or HeadRefreshJob.objects.create(reason=HeadRefreshJob.Reason.REQUESTED)
        refresh = head_refresh_run(job_id=refresh.pk)
        if refresh is None or refresh.status != JobStatus.SUCCEEDED:
            raise CommandError(f"training the demo's head failed: {refresh.error if refresh else 'not queued'}")
        self.stdout.write(f"demo model: {refresh.outcome} ({time.monotonic() - started:.0f} s)")

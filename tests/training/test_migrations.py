"""The migration that made TrainingRun a core.jobs.Job keeps existing rows: who asked, when, and where they were."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from releases.services.versions import dataset_version_create
from tests.factories.annotation import batch_make, image_make

BEFORE = [("training", "0001_initial")]


@pytest.mark.django_db
def test_the_models_match_the_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


# serialized_rollback: a plain transactional test re-creates content types on flush, which breaks the next
# test that restores the serialized database.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_old_running_run_keeps_its_requester_times_and_percent(admin_user):
    batch = batch_make(created_by=admin_user)
    for code in ("neutrophil", "lymphocyte"):
        image_make(batch=batch, final_label=code)
    version = dataset_version_create(created_by=admin_user)
    executor = MigrationExecutor(connection)
    # Every app's latest migration, not only training's: going back also unapplies the other apps' migrations that
    # depend on training (inference's index tables), and later tests need them back.
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    created = timezone.now()
    run = old.get_model("training", "TrainingRun").objects.create(
        dataset_version_id=version.pk,
        profile="smoke",
        config={},
        started_by_id=admin_user.pk,
        status="running",
        model_index=1,
        model_count=2,
        epoch=2,
        max_epochs=4,
        batch=5,
        batches_total=10,
        eta_seconds=120,
    )
    old.get_model("training", "TrainingRun").objects.filter(pk=run.pk).update(created_at=created)

    executor = MigrationExecutor(connection)
    executor.migrate(latest)
    new = executor.loader.project_state(latest).apps
    migrated = new.get_model("training", "TrainingRun").objects.get(pk=run.pk)
    assert (migrated.status, migrated.requested_by_id, migrated.requested_at) == ("running", admin_user.pk, created)
    # Model 2 of 2, epoch 2 of 4, batch 5 of 10: 4 + 1 epochs and 5 batches done of 2 x 4 x 10 batches.
    assert (migrated.done, migrated.total) == (55, 80)

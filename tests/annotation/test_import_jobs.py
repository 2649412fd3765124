"""An import batch as a background job: claimed once, heartbeats while it runs, resumed after a lost worker,
failed by the periodic reaper (never by a page or API read), and its old rows migrated to the job vocabulary."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from annotation.models import ImportBatch
from annotation.services.imports import items, runner
from annotation.services.imports.batches import import_batch_create
from annotation.signals import import_batch_finished
from annotation.tasks import import_batch_process as import_batch_process_task
from core.jobs import JobStatus
from core.tasks import jobs_reap_stale_task
from tests.factories.annotation import batch_make
from tests.helpers import folder_write, image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued_batch(admin_user, media, tmp_path):
    """queued_batch(files=4) -> a queued batch of that many distinct small images, not yet delivered."""

    def make(files: int = 4) -> ImportBatch:
        source = folder_write(tmp_path / "src", {f"{n}.jpg": image_bytes(seed=n, size=(8, 8)) for n in range(files)})
        return import_batch_create(created_by=admin_user, source=source, source_name="src", enqueue=False)

    return make


@pytest.fixture
def finished_signals():
    received = []

    def receiver(sender, batch, **kwargs):
        received.append(batch.pk)

    import_batch_finished.connect(receiver)
    yield received
    import_batch_finished.disconnect(receiver)


def _age(batch: ImportBatch, by: timedelta) -> None:
    """Move the batch's last heartbeat back, as if its worker had gone silent that long ago."""
    ImportBatch.objects.filter(pk=batch.pk).update(heartbeat_at=timezone.now() - by)


def _crash_on(monkeypatch, *, call: int) -> None:
    """The worker process dies while storing the call-th file (SystemExit escapes the service, as a kill would)."""
    real = items.image_store
    calls = []

    def crash(**kwargs):
        calls.append(1)
        if len(calls) == call:
            raise SystemExit("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(items, "image_store", crash)


def test_the_task_claims_the_batch_sends_heartbeats_and_finishes_it(queued_batch, settings, finished_signals):
    settings.HEMALOOP_IMPORT_PROGRESS_EVERY = 2
    batch = queued_batch(files=5)
    assert (batch.status, batch.started_at, batch.heartbeat_at) == ("queued", None, None)
    beats = []
    real_heartbeat = runner.job_heartbeat

    def heartbeat(**kwargs):
        ok = real_heartbeat(**kwargs)
        row = ImportBatch.objects.get(pk=batch.pk)  # what the progress page would read
        beats.append((row.status, row.done, row.total, row.heartbeat_at))
        return ok

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "job_heartbeat", heartbeat)
        assert import_batch_process_task.delay(batch.pk).get() == "succeeded"

    batch.refresh_from_db()
    assert [beat[:3] for beat in beats] == [("running", 0, 5), ("running", 2, 5), ("running", 4, 5)]
    stamps = [beat[3] for beat in beats]
    assert stamps == sorted(stamps)
    assert batch.started_at <= stamps[0]
    assert stamps[-1] <= batch.heartbeat_at == batch.finished_at
    assert (batch.status, batch.done, batch.total, batch.imported, batch.error) == ("succeeded", 5, 5, 5, "")
    assert finished_signals == [batch.pk]


def test_a_task_delivered_twice_imports_the_batch_once(queued_batch, finished_signals):
    batch = queued_batch(files=3)

    assert import_batch_process_task.delay(batch.pk).get() == "succeeded"
    finished_at = ImportBatch.objects.get(pk=batch.pk).finished_at
    assert import_batch_process_task.delay(batch.pk).get() == "succeeded"

    batch.refresh_from_db()
    assert batch.items.count() == 3
    assert (batch.done, batch.imported, batch.finished_at) == (3, 3, finished_at)
    assert finished_signals == [batch.pk]


def test_a_redelivered_task_resumes_a_batch_whose_worker_died(queued_batch, monkeypatch, finished_signals):
    batch = queued_batch(files=4)
    _crash_on(monkeypatch, call=3)
    with pytest.raises(SystemExit):
        import_batch_process_task.delay(batch.pk)
    crashed = ImportBatch.objects.get(pk=batch.pk)
    assert (crashed.status, crashed.items.count()) == ("running", 2)
    monkeypatch.undo()
    _age(batch, by=runner.TAKEOVER_AFTER + timedelta(seconds=1))

    assert import_batch_process_task.delay(batch.pk).get() == "succeeded"

    batch.refresh_from_db()
    assert (batch.done, batch.imported, batch.duplicates) == (4, 4, 0)
    assert sorted(batch.items.values_list("name", flat=True)) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert batch.started_at == crashed.started_at  # the same job, resumed
    assert finished_signals == [batch.pk]


def test_a_redelivered_task_leaves_a_batch_alone_while_its_worker_still_beats(queued_batch, monkeypatch):
    batch = queued_batch(files=4)
    _crash_on(monkeypatch, call=3)
    with pytest.raises(SystemExit):
        import_batch_process_task.delay(batch.pk)
    monkeypatch.undo()
    # Its heartbeat is seconds old: as far as anyone can tell, the first worker is still importing it.

    with pytest.raises(Retry) as retry:
        import_batch_process_task.delay(batch.pk)
    assert isinstance(retry.value.exc, runner.ImportBatchBusy)
    assert retry.value.when == runner.TAKEOVER_AFTER.total_seconds()  # it looks again once a dead worker shows
    last_try = import_batch_process_task.max_retries
    with pytest.raises(runner.ImportBatchBusy):  # a worker that kept beating all along finishes the batch alone
        import_batch_process_task.apply(args=[batch.pk], retries=last_try, throw=True)

    batch.refresh_from_db()
    assert (batch.status, batch.items.count()) == ("running", 2)


def test_a_stale_import_is_failed_by_the_reaper_and_not_by_reading_it(client_for, api_client_for, admin_user):
    stale = batch_make(
        created_by=admin_user,
        source_name="lost.zip",
        status=JobStatus.RUNNING,
        started_at=timezone.now() - timedelta(hours=1),
        total=10,
        done=4,
        imported=4,
    )
    _age(stale, by=ImportBatch.STALE_AFTER + timedelta(minutes=1))
    healthy = batch_make(created_by=admin_user, source_name="busy.zip", status=JobStatus.RUNNING, total=10)
    _age(healthy, by=ImportBatch.STALE_AFTER - timedelta(minutes=1))
    pages, api = client_for(admin_user), api_client_for(admin_user)

    assert pages.get(reverse("annotation:batch_list")).status_code == 200
    assert pages.get(reverse("annotation:batch_detail", args=[stale.id])).status_code == 200
    assert api.get("/api/annotation/batches/").status_code == 200
    assert api.get(f"/api/annotation/batches/{stale.id}/").status_code == 200
    assert api.get(f"/api/annotation/batches/{stale.id}/progress/").json()["status"] == "running"
    assert ImportBatch.objects.get(pk=stale.pk).status == "running"

    assert jobs_reap_stale_task()["import"] == 1

    progress = api.get(f"/api/annotation/batches/{stale.id}/progress/").json()
    assert (progress["status"], progress["finished"], progress["done"]) == ("failed", True, 4)
    assert "stopped reporting" in progress["error"]
    assert ImportBatch.objects.get(pk=healthy.pk).status == "running"
    html = pages.get(reverse("annotation:batch_detail", args=[stale.id])).content.decode()
    assert 'data-finished="true"' in html
    assert "stopped reporting" in html


def test_a_worker_whose_batch_was_reaped_stops_without_finishing_it(queued_batch, settings, finished_signals):
    settings.HEMALOOP_IMPORT_PROGRESS_EVERY = 2
    batch = queued_batch(files=6)
    progress = []

    def reap_after_the_first_files(row: ImportBatch) -> None:
        progress.append(row.done)
        if row.done == 2:  # the worker stalled so long that the reaper gave up on it
            _age(row, by=ImportBatch.STALE_AFTER + timedelta(minutes=1))
            jobs_reap_stale_task()

    batch = runner.import_batch_process(batch=batch, on_progress=reap_after_the_first_files)

    assert batch.status == "failed"
    assert "stopped reporting" in batch.error
    assert progress == [0, 2]
    # Its next heartbeat, two files later, was refused: it stopped there, out of the 6 files.
    assert batch.items.count() == 4
    assert finished_signals == []


# Migrating needs real commits; serialized_rollback leaves the seed rows for the transactional tests after it.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_old_import_rows_get_the_job_vocabulary_and_back(admin_user):
    executor = MigrationExecutor(connection)
    before = [("annotation", "0003_final_method_choices")]
    after = [("annotation", "0004_importbatch_job")]
    executor.migrate(before)
    old_model = executor.loader.project_state(before).apps.get_model("annotation", "ImportBatch")
    started = timezone.now() - timedelta(days=2)
    for status in ("pending", "running", "done", "failed"):
        old_model.objects.create(
            created_by_id=admin_user.pk,
            source_name=status,
            source_path="",
            status=status,
            processed=3,
            started_at=started if status != "pending" else None,
        )

    executor.loader.build_graph()
    executor.migrate(after)
    # Read through today's model (the reaper does): the later migrations add its newer columns.
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    rows = {b.source_name: b for b in ImportBatch.objects.all()}
    assert {name: row.status for name, row in rows.items()} == {
        "pending": "queued",
        "running": "running",
        "done": "succeeded",
        "failed": "failed",
    }
    assert {row.done for row in rows.values()} == {3}
    assert {row.requested_by_id for row in rows.values()} == {admin_user.pk}
    # The running row from before heartbeats counts as silent since it started, so the reaper fails it.
    assert rows["running"].heartbeat_at == started
    assert jobs_reap_stale_task()["import"] == 1

    executor.loader.build_graph()
    executor.migrate(before)
    old_model = executor.loader.project_state(before).apps.get_model("annotation", "ImportBatch")
    assert dict(old_model.objects.values_list("source_name", "status")) == {
        "pending": "pending",
        "running": "failed",
        "done": "done",
        "failed": "failed",
    }
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

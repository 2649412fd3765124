"""The archive build as a background job (core.jobs): the worker claims it, heartbeats while it writes, finishes
it; a second delivery of the task does nothing; the periodic reaper, never a page or API read, fails a build
whose worker died; the progress JSON is the shape every job shares."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from core import jobs
from core.tasks import jobs_reap_stale_task
from releases.models import DatasetArchive
from releases.services.archive_request import archive_build_start
from releases.tasks import dataset_archive_build

pytestmark = pytest.mark.django_db

Status = DatasetArchive.Status
COMMON_KEYS = {
    "id",
    "kind",
    "status",
    "status_display",
    "finished",
    "done",
    "total",
    "percent",
    "per_second",
    "eta_seconds",
    "error",
    "requested_at",
    "started_at",
    "finished_at",
}
ARCHIVE = "releases.services.archive"


@pytest.fixture
def version(cell, case, cut):
    for i in range(12):
        cell(["neutrophil", "monocyte"][i % 2], case=case(f"P-{i % 4}"))
    return cut()


@pytest.fixture
def queued(version, researcher, django_capture_on_commit_callbacks) -> DatasetArchive:
    """The version's archive, asked for by a researcher; its task was sent but no worker took it yet."""
    with django_capture_on_commit_callbacks(execute=False):
        archive_build_start(version=version, requested_by=researcher)
    return DatasetArchive.objects.get(version=version)


@pytest.fixture
def heartbeats(monkeypatch):
    """Every member written sends a heartbeat; heartbeats(before=fn) runs fn(archive) before each one is sent.
    Returns the list of (status, done) the row had after each heartbeat."""
    monkeypatch.setattr(f"{ARCHIVE}.PROGRESS_EVERY_S", 0)
    seen: list[tuple[str, int]] = []
    hooks = []

    def spy(*, job, **progress):
        for hook in hooks:
            hook(job)
        alive = jobs.job_heartbeat(job=job, **progress)
        row = DatasetArchive.objects.get(pk=job.pk)
        seen.append((row.status, row.done))
        return alive

    monkeypatch.setattr(f"{ARCHIVE}.job_heartbeat", spy)

    def install(*, before=None):
        if before is not None:
            hooks.append(before)
        return seen

    return install


def _go_stale(archive: DatasetArchive) -> None:
    """The worker died an hour ago, in the middle of the build."""
    an_hour_ago = timezone.now() - timedelta(hours=1)
    DatasetArchive.objects.filter(pk=archive.pk).update(
        status=Status.RUNNING, started_at=an_hour_ago, heartbeat_at=an_hour_ago, done=3
    )


def test_the_migrations_match_the_models():
    call_command("makemigrations", "releases", "--check", "--dry-run", verbosity=0)


def test_the_worker_claims_the_build_reports_progress_and_finishes_it(queued, heartbeats):
    seen = heartbeats()
    assert (queued.status, queued.started_at, queued.done, queued.total) == (Status.QUEUED, None, 0, 12 + 5)

    assert dataset_archive_build(queued.pk) == Status.SUCCEEDED

    archive = DatasetArchive.objects.get(pk=queued.pk)
    assert [status for status, _ in seen] == [Status.RUNNING] * len(seen)
    assert [done for _, done in seen] == list(range(1, 12 + 5 + 1))
    assert archive.done == archive.total == 12 + 5
    assert archive.requested_at <= archive.started_at <= archive.finished_at
    assert archive.heartbeat_at == archive.finished_at
    assert (archive.error, archive.percent) == ("", 100)
    assert default_storage.exists(archive.file_name)


def test_a_task_delivered_twice_builds_once(queued, heartbeats):
    # The second copy arrives while the first is writing, and again after it has finished.
    during = []
    heartbeats(before=lambda job: during.append(dataset_archive_build(job.pk)) if not during else None)

    assert dataset_archive_build(queued.pk) == Status.SUCCEEDED
    first = DatasetArchive.objects.get(pk=queued.pk)
    assert during == [Status.RUNNING]
    assert dataset_archive_build(queued.pk) == Status.SUCCEEDED
    again = DatasetArchive.objects.get(pk=queued.pk)
    assert (again.started_at, again.finished_at, again.sha256) == (first.started_at, first.finished_at, first.sha256)
    assert dataset_archive_build(queued.pk + 1000) == "missing"


def test_a_build_the_reaper_failed_stops_writing_and_publishes_nothing(queued, heartbeats):
    def reaped(job):
        _go_stale(job)
        jobs_reap_stale_task()

    heartbeats(before=reaped)
    assert dataset_archive_build(queued.pk) == Status.FAILED

    archive = DatasetArchive.objects.get(pk=queued.pk)
    assert "stopped reporting" in archive.error
    assert (archive.sha256, archive.file_name) == ("", "")
    folder = Path(default_storage.path("releases"))
    assert not folder.exists() or not list(folder.iterdir()), "neither the archive nor its temporary file is left"


def test_a_stale_build_is_failed_by_the_reaper_and_not_by_reading_it(queued, researcher, client_for, api_client_for):
    _go_stale(queued)
    browser, api = client_for(researcher), api_client_for(researcher)
    for url in ("/releases/", "/releases/v1/"):
        assert browser.get(url).status_code == 200
    for url in ("/api/releases/versions/", "/api/releases/versions/1/", "/api/releases/versions/1/archive/"):
        assert api.get(url).status_code == 200
    assert DatasetArchive.objects.get(pk=queued.pk).status == Status.RUNNING

    assert jobs_reap_stale_task()[DatasetArchive.JOB_KIND] == 1

    progress = api.get("/api/releases/versions/1/archive/").json()
    assert (progress["status"], progress["finished"]) == (Status.FAILED, True)
    assert "no heartbeat for 0:30:00" in progress["error"]
    assert "Build again" in browser.get("/releases/v1/").content.decode()


def test_a_live_build_blocks_a_second_request_and_a_stale_one_does_not(
    queued, researcher, django_capture_on_commit_callbacks
):
    now = timezone.now()
    DatasetArchive.objects.filter(pk=queued.pk).update(status=Status.RUNNING, started_at=now, heartbeat_at=now)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        archive_build_start(version=queued.version, requested_by=researcher)
    assert callbacks == []

    _go_stale(queued)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        archive = archive_build_start(version=queued.version, requested_by=researcher)
    assert len(callbacks) == 1
    assert archive.status == Status.QUEUED
    archive.refresh_from_db()
    assert (archive.status, archive.done, archive.total) == (Status.SUCCEEDED, 12 + 5, 12 + 5)


def test_a_build_whose_task_was_lost_is_sent_again(queued, researcher, django_capture_on_commit_callbacks):
    # The broker was down when the task was sent: after the stale limit, asking again sends it again.
    lost_at = timezone.now() - DatasetArchive.stale_after() - timedelta(minutes=1)
    DatasetArchive.objects.filter(pk=queued.pk).update(requested_at=lost_at)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        archive = archive_build_start(version=queued.version, requested_by=researcher)
    assert len(callbacks) == 1
    assert archive.requested_at > lost_at


def test_the_progress_json_is_the_common_job_shape_with_the_archive_fields(
    version, researcher, api_client_for, django_capture_on_commit_callbacks
):
    api = api_client_for(researcher)
    before = api.get("/api/releases/versions/1/archive/").json()
    assert set(before) == COMMON_KEYS | {"version", "sha256", "size_bytes", "download_url"}
    assert (before["kind"], before["status"], before["status_display"]) == ("dataset_archive", "not_built", "Not built")
    assert (before["finished"], before["started_at"], before["download_url"]) == (False, None, None)

    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/releases/versions/1/archive/")
    after = api.get("/api/releases/versions/1/archive/").json()
    archive = DatasetArchive.objects.get()
    assert (after["id"], after["status"], after["status_display"], after["percent"]) == (
        archive.pk,
        "succeeded",
        "Done",
        100,
    )
    assert (after["done"], after["total"], after["eta_seconds"], after["sha256"]) == (17, 17, None, archive.sha256)
    assert archive.started_at.isoformat() == after["started_at"] < after["finished_at"]
    assert after["download_url"].endswith("/api/releases/versions/1/archive/download/")
    listed = api.get("/api/releases/versions/").json()["results"][0]["archive"]
    assert listed == after


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_migration_maps_old_archive_rows_onto_the_job_statuses_and_back(researcher):
    old, new = [("releases", "0001_initial")], [("releases", "0003_datasetarchive_job_fields")]
    MigrationExecutor(connection).migrate(old)
    try:
        before = MigrationExecutor(connection).loader.project_state(old).apps
        cut_at, started = timezone.now() - timedelta(days=1), timezone.now() - timedelta(hours=1)
        ids = {}
        for number, status in enumerate(["not_built", "pending", "running", "done", "failed"], start=1):
            version = before.get_model("releases", "DatasetVersion").objects.create(
                number=number,
                created_by_id=researcher.pk,
                created_at=cut_at,
                image_count=4,
                case_count=0,
                test_fraction=0.2,
                validation_fraction=0.1,
                taxonomy=[],
                class_counts={},
                sources=[],
                agreement={},
                description="",
            )
            ids[status] = (
                before.get_model("releases", "DatasetArchive")
                .objects.create(
                    version=version,
                    status=status,
                    members_written=3 if status != "not_built" else 0,
                    members_total=9 if status != "not_built" else 0,
                    requested_at=None if status == "not_built" else started,
                    started_at=started if status in ("running", "done", "failed") else None,
                )
                .pk
            )

        MigrationExecutor(connection).migrate(new)
        rows = {row.pk: row for row in DatasetArchive.objects.all()}
        assert {old_status: rows[pk].status for old_status, pk in ids.items()} == {
            "not_built": "not_built",
            "pending": "queued",
            "running": "running",
            "done": "succeeded",
            "failed": "failed",
        }
        assert (rows[ids["done"]].done, rows[ids["done"]].total) == (3, 9)
        assert rows[ids["not_built"]].requested_at == cut_at
        assert rows[ids["running"]].heartbeat_at == started
        # A build that was running during the upgrade, with no worker left, is reaped like any other.
        assert jobs_reap_stale_task()[DatasetArchive.JOB_KIND] == 1
        assert DatasetArchive.objects.get(pk=ids["running"]).status == Status.FAILED

        MigrationExecutor(connection).migrate(old)
        after = MigrationExecutor(connection).loader.project_state(old).apps.get_model("releases", "DatasetArchive")
        assert dict(after.objects.values_list("pk", "status")) == {
            ids["not_built"]: "not_built",
            ids["pending"]: "pending",
            ids["running"]: "failed",
            ids["done"]: "done",
            ids["failed"]: "failed",
        }
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

"""A retrain through a REAL Celery worker (a subprocess on the training queue) and the embedded Redis, not eager."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from config.embedded import start_redis
from core.jobs import UNFINISHED, JobStatus
from tests.workers import celery_app_point_at, celery_app_restore, worker_database_url
from training.models import ModelVersion, TrainingRun

ROOT = Path(__file__).resolve().parents[2]
FINISH_TIMEOUT_S = 150


@pytest.fixture
def broker(tmp_path):
    """The embedded Redis, with this process's Celery app sending to it for the duration of the test."""
    redis = start_redis(tmp_path / "redis")
    url = "redis+socket://" + str(redis.socket)
    saved = celery_app_point_at(url)
    yield redis
    celery_app_restore(saved)
    redis.stop()


@pytest.fixture
def worker(broker, tmp_path):
    """start() launches `celery worker -Q training,default -P solo` against the test database and media."""
    processes = []

    def start() -> subprocess.Popen:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": worker_database_url(),
            "HEMALOOP_CELERY_EAGER": "0",
            "REDIS_URL": broker.url,
            "HEMALOOP_TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        }
        log = (tmp_path / "worker.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "training,default",
                "--concurrency",
                "1",
                "-P",
                "solo",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_worker_trains_the_run_and_registers_a_version(
    transactional_db, labeled_demo, admin_user, api_client_for, worker, tmp_path
):
    labeled_demo()
    response = api_client_for(admin_user).post("/api/training/runs/", {"profile": "smoke"}, format="json")
    assert response.status_code == 201, response.content
    run = TrainingRun.objects.get(pk=response.json()["id"])
    time.sleep(0.5)
    run.refresh_from_db()
    assert run.status == JobStatus.QUEUED  # not eager: the message waits in Redis for a worker

    process = worker()
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while run.status in UNFINISHED and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        run.refresh_from_db()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert run.status == JobStatus.SUCCEEDED, f"{run.status}: {run.error}\n{log[-3000:]}"
    assert "training.tasks.training_run" in log
    assert "succeeded" in log
    assert run.worker_host
    assert run.started_at
    assert run.heartbeat_at
    assert len(run.history) == 2  # one epoch per smoke model
    version = ModelVersion.objects.get(run=run)
    assert version.status == ModelVersion.Status.CANDIDATE
    assert (Path(settings.MEDIA_ROOT) / version.out_dir / "ensemble.json").is_file()

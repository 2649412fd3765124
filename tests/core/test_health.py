"""/healthz and /readyz against the real embedded services: PostgreSQL, Redis, the storage and Celery workers."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.workers import (
    celery_app_point_at,
    celery_app_restore,
    process_stop,
    wait_until,
    worker_env,
    worker_start,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _readyz() -> tuple[int, dict]:
    response = Client().get("/readyz")  # anonymous: load balancers do not log in
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def test_healthz_answers_without_login_or_services(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: healthz must not care
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"


def test_readyz_is_503_without_redis_and_names_what_is_missing(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    saved = celery_app_point_at("redis://127.0.0.1:1/0")
    try:
        status, body = _readyz()
    finally:
        celery_app_restore(saved)
    assert status == 503
    assert body["ready"] is False
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["storage"]["ok"] is True
    assert body["checks"]["redis"] == {"ok": False, "error": "ConnectionError", "ms": body["checks"]["redis"]["ms"]}
    assert body["checks"]["workers"]["ok"] is False


def test_readyz_waits_for_a_worker_on_every_queue(redis_server, settings, tmp_path):
    env = worker_env(redis_url=redis_server.url, media_root=settings.MEDIA_ROOT)
    status, body = _readyz()
    assert status == 503
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["workers"] == {
        "ok": False,
        "queues": {"default": 0, "training": 0, "inference": 0},
        "ms": body["checks"]["workers"]["ms"],
    }

    workers = [worker_start(queues="default", env=env, log=tmp_path / "default.log")]
    try:
        wait_until(
            lambda: _readyz()[1]["checks"]["workers"]["queues"]["default"] == 1, timeout=90, what="the default worker"
        )
        status, body = _readyz()
        assert status == 503, "training and inference have no worker yet"
        assert body["checks"]["workers"]["queues"] == {"default": 1, "training": 0, "inference": 0}

        workers.append(worker_start(queues="training,inference", env=env, log=tmp_path / "gpu.log"))
        wait_until(lambda: _readyz()[0] == 200, timeout=90, what="readiness with both workers")
        status, body = _readyz()
        assert body["ready"] is True
        assert body["checks"]["workers"]["queues"] == {"default": 1, "training": 1, "inference": 1}
        assert set(body["checks"]) == {"database", "redis", "storage", "workers"}
    finally:
        for worker in workers:
            process_stop(worker)
    # The storage probe cleans up after itself.
    probes = settings.MEDIA_ROOT / "health"
    assert not probes.exists() or list(probes.iterdir()) == []

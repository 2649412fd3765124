"""Readiness of the services a site needs: the database, Redis, the file storage and a worker on every queue.

`/readyz` reports these checks as JSON; `/healthz` only says the web process answers. Every probe has a short timeout,
so a load balancer polling `/readyz` never hangs on a dead service.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import redis
from celery import current_app
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection

# Every queue the Celery routes name must be served by at least one worker.
QUEUES = ("default", "training", "inference")
PROBE_TIMEOUT_S = 2.0
HEALTH_DIR = "health"


@dataclass
class Readiness:
    checks: dict[str, dict] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(check["ok"] for check in self.checks.values())

    def as_json(self) -> dict:
        return {"ready": self.ready, "checks": self.checks}


def _timed(probe) -> dict:
    started = time.monotonic()
    try:
        result = {"ok": True, **(probe() or {})}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the class name is enough to act on
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()


def _storage() -> None:
    # A write, a read and a delete: a bucket that lists but refuses writes is not ready for imports.
    name = default_storage.save(f"{HEALTH_DIR}/probe-{uuid.uuid4().hex}", ContentFile(b"ok"))
    try:
        with default_storage.open(name, "rb") as handle:
            if handle.read() != b"ok":
                raise OSError("storage returned other bytes than written")
    finally:
        default_storage.delete(name)


def _workers() -> dict:
    replies = current_app.control.inspect(timeout=PROBE_TIMEOUT_S).active_queues() or {}
    per_queue = dict.fromkeys(QUEUES, 0)
    for queues in replies.values():
        for queue in queues:
            if queue["name"] in per_queue:
                per_queue[queue["name"]] += 1
    # Not an exception: the counts per queue are what an operator needs to see when one is missing.
    return {"ok": all(per_queue.values()), "queues": per_queue}


def readiness_check() -> Readiness:
    """Probe each service once; a failing probe never stops the others."""
    readiness = Readiness()
    readiness.checks["database"] = _timed(_database)
    readiness.checks["redis"] = _timed(_redis) if settings.REDIS_URL else {"ok": False, "error": "not_configured"}
    readiness.checks["storage"] = _timed(_storage)
    readiness.checks["workers"] = _timed(_workers)
    return readiness

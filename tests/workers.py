"""Real Celery workers and an embedded Redis for the tests that need them: subprocesses, never eager."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import kombu.pools
from django.db import connection

from config.celery import app

ROOT = Path(__file__).resolve().parents[1]


def worker_database_url() -> str:
    """The throw-away cluster's URL (set by the test settings) pointed at pytest-django's test database."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return parts._replace(path="/" + connection.settings_dict["NAME"]).geturl()


def celery_app_point_at(url: str) -> dict:
    """Send this process's tasks to the broker at url; returns the settings to give back to celery_app_restore."""
    saved = {key: app.conf[key] for key in ("task_always_eager", "broker_url", "result_backend")}
    app.conf.update(task_always_eager=False, broker_url=url, result_backend=url)
    _pools_reset()
    return saved


def celery_app_restore(saved: dict) -> None:
    app.conf.update(**saved)
    _pools_reset()


def _pools_reset() -> None:
    # Connection and producer pools are built lazily from broker_url; drop them so they are rebuilt for it.
    # kombu keeps them in global registries keyed by the broker URL: closing app._pool alone leaves a closed pool
    # registered there, which the next user of the same URL (an eager test's apply_async) gets and fails on
    # ("Acquire on closed pool"). pools.reset() closes them and empties the registries.
    kombu.pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
    app.control.mailbox.producer_pool = None  # control (inspect, ping) caches its own pool
    # The result backend is cached per thread from result_backend too: an earlier test's backend would make
    # result.get() poll the old Redis until it times out.
    app._local.__dict__.pop("backend", None)
    app._backend_cache = None  # where a thread-safe backend is kept instead


def worker_start(
    *, queues: str, env: dict[str, str], log: Path, cwd: Path = ROOT, hostname: str = ""
) -> subprocess.Popen:
    """`celery worker -Q queues -P solo` in cwd with env (settings, database, broker); its output goes to log."""
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "--concurrency", "1", "-P", "solo"]
    argv += ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname", hostname or f"{queues}@%h"]
    # cwd may be another folder than the checkout: the project must still be importable.
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))}
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def process_stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.3) -> object:
    """Poll condition until it returns something true; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def worker_env(*, redis_url: str, media_root: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker on the test settings, this test's database and media, and the given Redis."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": worker_database_url(),
        "HEMALOOP_CELERY_EAGER": "0",
        "REDIS_URL": redis_url,
        "HEMALOOP_TEST_MEDIA_ROOT": str(media_root),
        **extra,
    }

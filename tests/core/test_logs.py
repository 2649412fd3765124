"""Structured logs: every request has an id (echoed, a client's own only behind trusted proxies), and a worker's
lines name the task and the request that queued it."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.test import Client

from config.celery import app
from core.logs import ContextFilter, JsonFormatter, request_id_var
from tests.workers import process_stop, wait_until, worker_env, worker_start


@pytest.fixture
def json_log():
    """The root logger's records as the JSON lines HEMALOOP_LOG_FORMAT=json writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger().removeHandler(handler)


@pytest.mark.django_db
def test_every_response_carries_a_fresh_request_id_and_a_client_cannot_choose_it(settings):
    settings.HEMALOOP_TRUSTED_PROXIES = 0
    first = Client().get("/healthz")["X-Request-ID"]
    second = Client().get("/healthz", headers={"X-Request-ID": "chosen-by-client"})["X-Request-ID"]
    assert len(first) == 32
    assert second not in (first, "chosen-by-client")


@pytest.mark.django_db
def test_behind_a_trusted_proxy_its_request_id_is_kept_unless_malformed(settings):
    settings.HEMALOOP_TRUSTED_PROXIES = 1
    assert Client().get("/healthz", headers={"X-Request-ID": "proxy-7f3a.1"})["X-Request-ID"] == "proxy-7f3a.1"
    forged = Client().get("/healthz", headers={"X-Request-ID": 'x"\n{"level": "CRITICAL"}'})["X-Request-ID"]
    assert "\n" not in forged
    assert len(forged) == 32


@pytest.mark.django_db
def test_a_log_line_written_while_serving_a_request_carries_its_id(admin_user, client_for, json_log):
    response = client_for(admin_user).get("/no-such-page/")  # Django logs "Not Found" inside the request
    assert response.status_code == 404
    lines = [line for line in json_log() if line["logger"] == "django.request"]
    assert lines, json_log()
    assert lines[-1]["request_id"] == response["X-Request-ID"]
    assert lines[-1]["level"] == "WARNING"
    assert "/no-such-page/" in lines[-1]["message"]
    assert request_id_var.get() == ""  # nothing leaks into the next request


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_logs_json_lines_with_the_task_id_and_the_request_that_queued_it(redis_server, settings, tmp_path):
    log = tmp_path / "worker.log"
    env = worker_env(redis_url=redis_server.url, media_root=settings.MEDIA_ROOT, HEMALOOP_LOG_FORMAT="json")
    worker = worker_start(queues="default", env=env, log=log)
    try:
        token = request_id_var.set("req-from-web-1")
        try:
            result = app.send_task("config.ping", queue="default")
        finally:
            request_id_var.reset(token)
        assert result.get(timeout=120) == "pong"

        def done_line():
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("task_id") == result.id and "succeeded" in line["message"]]

        (line,) = wait_until(done_line, timeout=30, what="the worker's 'succeeded' line")
    finally:
        process_stop(worker)
    assert line["request_id"] == "req-from-web-1"
    assert line["task_name"] == "config.ping"
    assert line["logger"] == "celery.app.trace"

"""Log records that say which request or task wrote them: a request id (middleware) and the Celery task id
(signals) ride along in context variables, and HEMALOOP_LOG_FORMAT=json writes one JSON object per line."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from datetime import UTC, datetime

from celery.signals import before_task_publish, task_postrun, task_prerun
from django.conf import settings
from django.core.signals import request_finished
from django.dispatch import receiver

REQUEST_ID_HEADER = "X-Request-ID"
# Celery carries the request id of the web request that queued a task in this message header.
TASK_HEADER = "hemaloop_request_id"
# What an incoming id may look like: a proxy's UUID or hex id, never something that could forge a log line.
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
task_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default="")
task_name_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_name", default="")


def request_id_choose(*, incoming: str) -> str:
    """The proxy's id when a trusted reverse proxy sits in front (it sets or overwrites the header); otherwise
    the client wrote the header itself, and its value is not believed: a fresh id."""
    if settings.HEMALOOP_TRUSTED_PROXIES > 0 and _INCOMING_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Gives every request an id, logs under it, and echoes it in the X-Request-ID response header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_choose(incoming=request.headers.get(REQUEST_ID_HEADER, ""))
        request.request_id = request_id
        # Not reset on the way out: Django logs a 4xx/5xx after the middleware returns; request_finished clears it.
        request_id_var.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


@receiver(request_finished)
def _request_context_leave(**_kwargs) -> None:
    request_id_var.set("")


class ContextFilter(logging.Filter):
    """Adds request_id, task_id and task_name to every record (empty outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.task_id = task_id_var.get()
        record.task_name = task_name_var.get()
        ids = [f"request={record.request_id}"] if record.request_id else []
        ids += [f"task={record.task_id}"] if record.task_id else []
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, logger, message, ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "task_id", "task_name"):
            value = getattr(record, key, "")
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@before_task_publish.connect
def _request_id_into_task(headers=None, **_kwargs) -> None:
    # A task queued by a request logs that request's id too, so one id follows a user's action across processes.
    request_id = request_id_var.get()
    if headers is not None and request_id:
        headers.setdefault(TASK_HEADER, request_id)


# Tokens per running task: an eager task runs inside a request, and leaving it must give the request its id back.
_task_tokens: dict[str, list[contextvars.Token]] = {}


@task_prerun.connect
def _task_context_enter(task_id=None, task=None, **_kwargs) -> None:
    request_id = (getattr(task.request, TASK_HEADER, None) if task is not None else None) or request_id_var.get()
    _task_tokens[task_id or ""] = [
        task_id_var.set(task_id or ""),
        task_name_var.set(getattr(task, "name", "") or ""),
        request_id_var.set(request_id),
    ]


@task_postrun.connect
def _task_context_leave(task_id=None, **_kwargs) -> None:
    tokens = _task_tokens.pop(task_id or "", [])
    for var, token in zip((task_id_var, task_name_var, request_id_var), tokens, strict=False):
        var.reset(token)

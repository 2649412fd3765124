"""The Celery app. Queues: default (imports, releases), training (GPU), inference (GPU)."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("hemaloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("training"), Queue("inference"))
app.autodiscover_tasks()


@app.task(name="config.ping", acks_late=False, time_limit=10)
def ping() -> str:
    """Health check: proves a worker consumes from the broker and can write results."""
    return "pong"

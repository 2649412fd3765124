"""Test settings: a throw-away embedded PostgreSQL cluster, eager Celery, fast hashing, temp media."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-only-not-secret"  # noqa: S105 - tests never run with production settings
DEBUG = False
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_tmp = Path(tempfile.mkdtemp(prefix="hemaloop-test-"))
atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
# A real-worker test hands its media dir to the worker it starts, so both see the same files.
MEDIA_ROOT = Path(env.str("HEMALOOP_TEST_MEDIA_ROOT", default=str(_tmp / "media")))
VAR_DIR = _tmp / "var"
STATIC_ROOT = _tmp / "static"  # exists, so whitenoise does not warn on every request
STATIC_ROOT.mkdir()

if not os.environ.get("DATABASE_URL"):
    # One cluster per test process, deleted at exit; the same engine as production.
    from config.embedded import start_throwaway_postgres

    os.environ["DATABASE_URL"] = start_throwaway_postgres()
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 0

# Eager unless a real-worker test starts a worker with HEMALOOP_CELERY_EAGER=0 and REDIS_URL.
CELERY_TASK_ALWAYS_EAGER = env.bool("HEMALOOP_CELERY_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_URL = redis_url_for_celery(REDIS_URL) if REDIS_URL else "memory://"  # noqa: F405
CELERY_RESULT_BACKEND = CELERY_BROKER_URL if REDIS_URL else "cache+memory://"  # noqa: F405
# Most tests import images without caring for the index: embedding them all would cost minutes. Index and refresh
# tests turn it on with the settings fixture.
HEMALOOP_INDEX_AUTO = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

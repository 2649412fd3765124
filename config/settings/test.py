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
MEDIA_ROOT = _tmp / "media"
VAR_DIR = _tmp / "var"
STATIC_ROOT = _tmp / "static"  # exists, so whitenoise does not warn on every request
STATIC_ROOT.mkdir()

if not os.environ.get("DATABASE_URL"):
    # One cluster per test process, deleted at exit; the same engine as production.
    from config.embedded import start_throwaway_postgres

    os.environ["DATABASE_URL"] = start_throwaway_postgres()
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 0

CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = "cache+memory://"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

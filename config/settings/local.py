"""One-machine settings used by `make run`: embedded PostgreSQL and Redis started by config.launcher."""

import json
import secrets

from .base import *  # noqa: F403
from .base import VAR_DIR, env, redis_url_for_celery

DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])


def _local_secret_key() -> str:
    """A random key generated on first run and kept under var/, so sessions survive restarts."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _local_secret_key()

# The launcher records where it started the embedded services; explicit URLs win.
_services_file = VAR_DIR / "services.json"
_services = json.loads(_services_file.read_text()) if _services_file.exists() else {}
if not env.str("DATABASE_URL", default="") and "database_url" in _services:
    DATABASES = {"default": env.db_url_config(_services["database_url"])}  # noqa: F405
    DATABASES["default"]["CONN_MAX_AGE"] = 60
REDIS_URL = env.str("REDIS_URL", default="") or _services.get("redis_url", "")
CELERY_BROKER_URL = redis_url_for_celery(REDIS_URL) if REDIS_URL else "memory://"
CELERY_RESULT_BACKEND = redis_url_for_celery(REDIS_URL) if REDIS_URL else "cache+memory://"
if REDIS_URL:
    # Both gunicorn workers count login failures and throttled calls in one place, as in production.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

# gunicorn serves static files through whitenoise straight from the app folders (no collectstatic step).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

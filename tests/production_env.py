"""The environment of web and workers in production: docker/compose.yml sets these variables, and the topology test
(tests/test_topology.py) sets the same ones, so the compose file and the tested topology cannot drift apart."""

APP_VARIABLES = frozenset(
    {
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "SECURE_SSL_REDIRECT",
        "DATABASE_URL",
        "REDIS_URL",
        "AWS_STORAGE_BUCKET_NAME",
        "AWS_S3_ENDPOINT_URL",
        "AWS_S3_REGION_NAME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "HEMALOOP_DOWNLOAD_REDIRECT",
        "HEMALOOP_CACHE_DIR",
        "HEMALOOP_LOG_FORMAT",
    }
)

import pytest

from config.embedded import start_redis
from tests.workers import celery_app_point_at, celery_app_restore


@pytest.fixture
def redis_server(tmp_path, settings):
    """The embedded Redis as REDIS_URL, with this process's Celery app sending to it for the test."""
    redis = start_redis(tmp_path / "redis")
    settings.REDIS_URL = redis.url
    saved = celery_app_point_at("redis+socket://" + str(redis.socket))
    yield redis
    celery_app_restore(saved)
    redis.stop()

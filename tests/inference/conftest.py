"""Fixtures of the inference tests that run the real embedding index and queue refresh."""

from __future__ import annotations

import pytest

from inference.ensembles import ensemble_cache_clear
from inference.services.index import index_cache_clear


@pytest.fixture
def index_on(settings, media):
    """The automatic index and refresh at test sizes: 32 px images, shards of 5, a refresh every 4 final labels."""
    settings.HEMALOOP_INDEX_AUTO = True
    settings.HEMALOOP_INDEX_IMAGE_SIZE = 32
    settings.HEMALOOP_INDEX_SHARD_SIZE = 5
    settings.HEMALOOP_HEAD_REFRESH_EVERY = 4
    settings.HEMALOOP_HEAD_AUTO_ACTIVATE = True
    # A worker's cached index would outlive the test's database rows and media folder.
    index_cache_clear()
    yield settings
    ensemble_cache_clear()
    index_cache_clear()

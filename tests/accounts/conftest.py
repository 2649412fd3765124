"""Login throttling keeps its counters in the cache, which outlives a test's database transaction; and a clock the
tests move by hand, so a window can pass without sleeping."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """Stops time.time() (the throttle's clock and the in-memory cache's expiry); clock.advance(s) moves it."""
    frozen = Clock(time.time())
    monkeypatch.setattr(time, "time", frozen)
    return frozen


@pytest.fixture
def login_limits(settings):
    """Small limits: 3 failures lock a user name, 5 an address, for 10 minutes."""
    settings.HEMALOOP_LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.HEMALOOP_LOGIN_FAILURES_PER_ADDRESS = 5
    settings.HEMALOOP_LOGIN_WINDOW_SECONDS = 600
    settings.HEMALOOP_TRUSTED_PROXIES = 0
    return settings

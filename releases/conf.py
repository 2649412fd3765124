"""Release settings read at call time, so a deployment (or a test) can change them without a restart of this module."""

from __future__ import annotations

from django.conf import settings


def test_fraction() -> float:
    """Share of the images held out for test; 0.2 as in Park et al. (2024)."""
    return float(settings.HEMALOOP_RELEASE_TEST_FRACTION)


def validation_fraction() -> float:
    """Share of the images not in test that go to validation."""
    return float(settings.HEMALOOP_RELEASE_VALIDATION_FRACTION)


def archive_time_limit_s() -> int:
    return int(settings.HEMALOOP_RELEASE_ARCHIVE_TIME_LIMIT_S)


def x_accel_redirect_prefix() -> str:
    """When set (e.g. "/protected-media/"), nginx serves archive downloads from MEDIA_ROOT through an
    `internal` location with that prefix, and Django only checks the role and names the file."""
    return str(settings.HEMALOOP_RELEASES_X_ACCEL_REDIRECT_PREFIX)

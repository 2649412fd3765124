"""One application error type: services raise it, the DRF handler and page views turn it into a response.

A service says what went wrong and which HTTP status fits; views never build error responses by hand.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class AppError(Exception):
    """A refusal a user can act on. `status` is the HTTP status, `code` a stable machine-readable name."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class PermissionRefused(AppError, PermissionDenied):
    """Also Django's PermissionDenied, so page views answer 403 without catching it."""

    status = 403
    code = "permission_denied"


class NotFoundError(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class TooLarge(AppError):
    status = 413
    code = "too_large"


class TooManyRequests(AppError):
    """Refused for a while: `retry_after` seconds go to the Retry-After header, so clients know when to retry."""

    status = 429
    code = "throttled"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Unavailable(AppError):
    status = 503
    code = "unavailable"


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus AppError as {"detail": message, "code": code} with the error's status."""
    if isinstance(exc, AppError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        return Response({"detail": exc.message, "code": exc.code}, status=exc.status, headers=headers)
    return drf_exception_handler(exc, context)

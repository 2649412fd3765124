"""Failed-login throttling shared by the login page and the token endpoint: after too many failures in a window, an
account or a client address is locked for a window, whatever the password. Counters live in Django's cache (Redis in
production, so every web worker sees the same counts)."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.http import HttpRequest

from core.errors import TooManyRequests

_logger = logging.getLogger(__name__)
_PREFIX = "hemaloop:login"


class LoginLocked(TooManyRequests):
    code = "login_locked"


def client_address(*, request: HttpRequest) -> str:
    """The address failures are counted for: REMOTE_ADDR, or the entry HEMALOOP_TRUSTED_PROXIES hops from the right
    of X-Forwarded-For. Never X-Forwarded-For by default: the client writes that header itself, so trusting it lets an
    attacker claim a fresh address on every attempt; only the entries appended by proxies we run can be believed."""
    address = request.META.get("REMOTE_ADDR", "")
    hops = settings.HEMALOOP_TRUSTED_PROXIES
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            address = forwarded[-min(hops, len(forwarded))]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    # One IPv6 host usually holds a whole /64: counting single addresses would give it 2**64 fresh counters.
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def _keys(*, username: str, address: str) -> dict[str, str]:
    # Hashed: user names and addresses are arbitrary text, cache keys are not. Case-folded so that "Alice" and
    # "alice" share a counter (a lock then covers both, never neither).
    account = hashlib.sha256(username.strip().casefold().encode()).hexdigest()
    return {"account": f"{_PREFIX}:account:{account}", "address": f"{_PREFIX}:address:{address}"}


def _limits() -> dict[str, int]:
    return {
        "account": settings.HEMALOOP_LOGIN_FAILURES_PER_ACCOUNT,
        "address": settings.HEMALOOP_LOGIN_FAILURES_PER_ADDRESS,
    }


def _locked_error(*, until: float) -> LoginLocked:
    wait = max(1, math.ceil(until - time.time()))
    count, unit = (wait, "second") if wait < 60 else (math.ceil(wait / 60), "minute")
    when = f"{count} {unit}{'' if count == 1 else 's'}"
    # One message for accounts and addresses, known and unknown names: a lock must not tell which names exist.
    return LoginLocked(f"Too many failed login attempts. Try again in {when}.", retry_after=wait)


def login_lock_check(*, username: str, address: str) -> None:
    """Raise LoginLocked while the account or the address is locked."""
    keys = _keys(username=username, address=address)
    locks = cache.get_many([f"{key}:locked" for key in keys.values()])
    if locks:
        raise _locked_error(until=max(locks.values()))


def _increment(key: str, *, window: int) -> int:
    """Count one failure in the window that started with the first one (add sets the expiry, incr keeps it)."""
    cache.add(key, 0, timeout=window)
    try:
        return cache.incr(key)
    except ValueError:  # the window ended between add and incr: this failure opens the next one
        cache.add(key, 1, timeout=window)
        return 1


def _log_lock(*, kind: str, username: str, address: str, failures: int) -> None:
    # A name that is no account may be a password typed into the wrong field: it never goes to the log.
    known = get_user_model().objects.filter(username__iexact=username.strip()).exists()
    name = username if known else "(not a user)"
    _logger.warning("Login locked for the %s after %d failures: user %s, address %s", kind, failures, name, address)


def login_failure_record(*, username: str, address: str) -> None:
    """Count a failed login for the account and the address; raise LoginLocked if either just reached its limit."""
    window = settings.HEMALOOP_LOGIN_WINDOW_SECONDS
    limits = _limits()
    locked_until = None
    for kind, key in _keys(username=username, address=address).items():
        failures = _increment(f"{key}:failures", window=window)
        if failures >= limits[kind]:
            locked_until = time.time() + window
            cache.set(f"{key}:locked", locked_until, timeout=window)
            cache.delete(f"{key}:failures")
            _log_lock(kind=kind, username=username, address=address, failures=failures)
    if locked_until is not None:
        raise _locked_error(until=locked_until)


def login_success_record(*, username: str, address: str) -> None:
    """A correct password clears the account's failures. The address keeps its count: otherwise one valid account
    would let an attacker reset the address counter between guesses at other accounts."""
    cache.delete(f"{_keys(username=username, address=address)['account']}:failures")


def login_attempt(*, request: HttpRequest, username: str, password: str) -> AbstractBaseUser | None:
    """authenticate() behind the throttle: the user, None for wrong credentials, LoginLocked while locked.

    A locked account or address is refused before the password is checked, so a lock answers the same for a right and
    a wrong password, and for a known and an unknown name.
    """
    address = client_address(request=request)
    login_lock_check(username=username, address=address)
    user = authenticate(request, username=username, password=password)
    if user is None:
        login_failure_record(username=username, address=address)
    else:
        login_success_record(username=username, address=address)
    return user

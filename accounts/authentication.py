"""DRF authentication for the API: session cookies (the pages' JavaScript) and tokens (scripts)."""

from drf_spectacular.authentication import SessionScheme
from rest_framework import authentication


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication, but a refused request that carried a token is answered 401, not 403.

    DRF takes the WWW-Authenticate challenge from the first authentication class only and turns 401 into 403 when it
    has none, as the session class has not. A script whose token was revoked must be told to log in again (401);
    a request without credentials keeps the 403 the pages' JavaScript and the permission matrix expect.
    """

    def authenticate_header(self, request) -> str | None:
        keyword = authentication.TokenAuthentication.keyword
        if authentication.get_authorization_header(request).split()[:1] == [keyword.encode()]:
            return keyword
        return None


class SessionCookieScheme(SessionScheme):
    """The OpenAPI schema describes the session cookie as for DRF's class (defining it registers it)."""

    target_class = "accounts.authentication.SessionAuthentication"

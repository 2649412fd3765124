"""Only researchers and admins list, cut, build and download versions; annotators and adjudicators never do."""

from __future__ import annotations

import pytest

from core.roles import Role
from releases.models import DatasetVersion

pytestmark = pytest.mark.django_db

# (method, url, status for researchers and admins); every one is 403 for annotators and adjudicators.
# Every POST sends a title, as the page's form does (an empty form body would only redisplay the form).
ENDPOINTS = [
    ("get", "/releases/", 200),
    ("get", "/releases/new/", 200),
    ("post", "/releases/new/", 302),
    ("get", "/releases/v1/", 200),
    ("post", "/releases/v1/archive/", 302),
    ("get", "/releases/v1/download/", 200),
    ("get", "/releases/diff/", 200),
    ("get", "/api/releases/versions/", 200),
    ("post", "/api/releases/versions/", 201),
    ("get", "/api/releases/versions/1/", 200),
    ("get", "/api/releases/versions/1/manifest/", 200),
    ("get", "/api/releases/versions/1/archive/", 200),
    ("post", "/api/releases/versions/1/archive/", 202),
    ("get", "/api/releases/versions/1/archive/download/", 200),
    ("get", "/api/releases/versions/1/diff/1/", 200),
]


@pytest.fixture
def version(cell, cut, build):
    cell("neutrophil")
    version = cut()
    build(version)
    return version


def _client(role, *, url, make_user, client_for, api_client_for):
    user = make_user(role)
    return api_client_for(user) if url.startswith("/api/") else client_for(user)


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.ADMIN])
@pytest.mark.parametrize(("method", "url", "status"), ENDPOINTS)
def test_researchers_and_admins_may(role, method, url, status, version, make_user, client_for, api_client_for):
    client = _client(role, url=url, make_user=make_user, client_for=client_for, api_client_for=api_client_for)
    response = client.post(url, {"title": "x"}) if method == "post" else client.get(url)
    assert response.status_code == status


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.ADJUDICATOR, None])
@pytest.mark.parametrize(("method", "url", "status"), ENDPOINTS)
def test_annotators_adjudicators_and_users_without_a_role_may_not(
    role, method, url, status, version, make_user, client_for, api_client_for
):
    client = _client(role, url=url, make_user=make_user, client_for=client_for, api_client_for=api_client_for)
    response = client.post(url, {"title": "x"}) if method == "post" else client.get(url)
    assert response.status_code == 403
    assert not getattr(response, "streaming", False), "no archive byte may reach them"
    assert DatasetVersion.objects.count() == 1, "nothing was cut"


@pytest.mark.parametrize("url", [url for _, url, _ in ENDPOINTS if url.startswith("/releases/")])
def test_anonymous_visitors_are_sent_to_the_login_page(url, version, client):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")

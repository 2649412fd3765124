"""Shared fixtures: one user per role, and logged-in clients for pages and the API."""

from __future__ import annotations

import importlib
import itertools

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import user_create
from core.roles import Role

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _taxonomy_survives_flushes(request):
    """Transactional tests (live_server, threads) end with a flush that empties every table, and the
    taxonomy comes from a data migration that does not run again: seed it back for each such test."""
    marker = request.node.get_closest_marker("django_db")
    transactional_mark = marker is not None and marker.kwargs.get("transaction", False)
    if not transactional_mark and not {"transactional_db", "live_server"} & set(request.fixturenames):
        return
    request.getfixturevalue("transactional_db")
    from django.apps import apps

    seed = importlib.import_module("annotation.migrations.0002_taxonomy").seed
    seed(apps, None)


@pytest.fixture
def make_user(db):
    """make_user(Role.ANNOTATOR) -> a new active user holding that role."""

    def make(role: Role | None = None, **kwargs):
        username = kwargs.pop("username", None) or f"{role.value if role else 'norole'}{next(_names)}"
        if role is None:
            from django.contrib.auth import get_user_model

            return get_user_model().objects.create_user(username=username, password="pw-not-used-1234")
        user, _ = user_create(username=username, role=role, **kwargs)
        return user

    return make


@pytest.fixture
def admin_user(make_user):
    return make_user(Role.ADMIN)


@pytest.fixture
def annotator(make_user):
    return make_user(Role.ANNOTATOR)


@pytest.fixture
def researcher(make_user):
    return make_user(Role.RESEARCHER)


@pytest.fixture
def adjudicator(make_user):
    return make_user(Role.ADJUDICATOR)


@pytest.fixture
def client_for():
    """client_for(user) -> a Django test client logged in as user (pages)."""

    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def api_client_for():
    """api_client_for(user) -> a DRF client authenticated with the user's API token."""
    from rest_framework.authtoken.models import Token

    def make(user) -> APIClient:
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make

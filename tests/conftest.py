"""Fixtures more than one test folder uses: users per role and logged-in clients, a private MEDIA_ROOT, an import
batch, model versions with seeded predictions, and the labeled demo set. Rows come from tests/factories."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path

import pytest
from django.apps import apps
from django.test import Client
from rest_framework.test import APIClient

from annotation.models import CellImage, ImportBatch
from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process
from config.celery import app
from core.roles import Role
from inference.models import Prediction
from tests.factories.accounts import UserFactory
from tests.factories.annotation import ImportBatchFactory, image_make
from tests.factories.inference import PredictionFactory
from tests.factories.releases import DatasetVersionFactory
from tests.factories.training import ModelVersionFactory
from tests.helpers import DEMO_CLASSES, demo_subset, next_variant
from tests.s3 import moto_s3_server, s3_client, s3_environment
from tests.workers import celery_app_point_at, celery_app_restore
from training.models import ModelVersion


@pytest.fixture(autouse=True)
def _taxonomy_survives_flushes(request):
    """Transactional tests (live_server, threads) end with a flush that empties every table, and the
    taxonomy comes from a data migration that does not run again: seed it back for each such test."""
    marker = request.node.get_closest_marker("django_db")
    transactional_mark = marker is not None and marker.kwargs.get("transaction", False)
    if not transactional_mark and not {"transactional_db", "live_server"} & set(request.fixturenames):
        return
    request.getfixturevalue("transactional_db")
    seed = importlib.import_module("annotation.migrations.0002_taxonomy").seed
    seed(apps, None)


@pytest.fixture
def make_user(db):
    """make_user(Role.ANNOTATOR) -> a new active user holding that role; make_user(None) one without any."""

    def make(role: Role | None = None, **fields):
        return UserFactory(role=role, **fields)

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


@pytest.fixture
def broker_unreachable():
    """Tasks go to a Redis address where nothing listens (a port just freed), not run eagerly: the broker is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = app.conf.result_backend_transport_options
    # The Redis result backend retries its subscription 20 times, a second apart, before it gives up; a test need
    # not wait for that (production keeps the default: a Redis restart of a few seconds must not fail jobs).
    app.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 1, "interval_max": 0.1}}
    saved = celery_app_point_at(f"redis://127.0.0.1:{port}/0")
    yield
    celery_app_restore(saved)
    app.conf.result_backend_transport_options = options


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """A MEDIA_ROOT of this test only, so 'no file was left behind' can be checked exactly."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def batch(admin_user) -> ImportBatch:
    return ImportBatchFactory(requested_by=admin_user)


@pytest.fixture
def make_version(admin_user, batch):
    """make_version(status) -> a registered ModelVersion with no ensemble on disk (predictions are seeded)."""
    image_make(batch=batch, final_label="neutrophil")
    image_make(batch=batch, final_label="lymphocyte")
    dataset_version = DatasetVersionFactory(created_by=admin_user)

    def make(status: str = ModelVersion.Status.CANDIDATE) -> ModelVersion:
        return ModelVersionFactory(status=status, run__dataset_version=dataset_version, run__requested_by=admin_user)

    return make


@pytest.fixture
def predict(db):
    """predict(version, image, {code: p, ...}) -> a Prediction; the unnamed classes share what is left equally."""

    def make(version: ModelVersion, image: CellImage, probs: dict[str, float]) -> Prediction:
        return PredictionFactory(model_version=version, image=image, probs=probs)

    return make


@pytest.fixture
def labeled_demo(admin_user, tmp_path, settings):
    """import_labeled(classes) imports demo images as trusted (final) labels with their cases."""
    # 12 demo cases: the default 10% validation share of the ~10 non-test cases would round to none.
    settings.HEMALOOP_RELEASE_VALIDATION_FRACTION = 0.25

    def import_labeled(classes: tuple[str, ...] = DEMO_CLASSES) -> ImportBatch:
        source = demo_subset(target=tmp_path / f"demo-{len(classes)}", classes=classes)
        batch = import_batch_create(
            created_by=admin_user,
            source=source,
            source_name="demo",
            trusted=True,
            csv_path=source / "cases.csv",
            enqueue=False,
        )
        return import_batch_process(batch=batch)

    return import_labeled


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 API server (tests/s3.py), one per test process."""
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_storage(settings, s3_endpoint, tmp_path):
    """The default storage is a fresh, empty S3 bucket (django-storages), as in production; yields its name. Workers'
    copies of stored files go to a cache folder of this test only."""
    bucket = f"test-{next_variant()}-{tmp_path.name.lower().replace('_', '-')[:30]}".rstrip("-")
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    for name, value in s3_environment(endpoint=s3_endpoint, bucket=bucket).items():
        setattr(settings, name, value)
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    settings.AWS_S3_SIGNATURE_VERSION = "s3v4"
    settings.AWS_DEFAULT_ACL = None
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage"}}
    settings.HEMALOOP_CACHE_DIR = str(tmp_path / "worker-cache")
    return bucket

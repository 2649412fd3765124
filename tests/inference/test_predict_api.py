"""POST /api/inference/predict/: the active ensemble on uploaded images, input checks, roles and the rate limit."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from core.roles import Role
from inference.ensembles import ensemble_cache_clear
from inference.explain.opinion import image_opinion
from tests.factories.annotation import image_make
from tests.helpers import cell_png
from tests.inference.ensembles import version_factory
from training.models import ModelVersion

pytestmark = pytest.mark.django_db
URL = "/api/inference/predict/"


@pytest.fixture
def version_with_ensemble(make_version):
    yield version_factory(make_version)
    ensemble_cache_clear()  # the next test's versions live in other folders; free the memory


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # Throttle history lives in the cache, which outlives a test's database transaction.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client(researcher, api_client_for) -> APIClient:
    return api_client_for(researcher)


def upload(name: str, data: bytes, content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def png(size: tuple[int, int], variant: int = 1) -> bytes:
    return cell_png(variant=variant, size=size)


def test_two_images_get_calibrated_probabilities_class_and_uncertainty(version_with_ensemble, client, batch):
    version = version_with_ensemble()
    stored = image_make(batch=batch)
    with open(default_storage.path(stored.file), "rb") as handle:
        same_bytes = handle.read()

    response = client.post(
        URL, {"images": [upload("a.png", png((96, 96), 3)), upload("b.png", same_bytes)]}, format="multipart"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"] == {"id": version.pk, "name": f"Model version {version.pk}"}
    assert [r["file"] for r in body["results"]] == ["a.png", "b.png"]
    for result in body["results"]:
        codes = list(result["probabilities"])
        p = np.array(list(result["probabilities"].values()))
        assert len(codes) == 12
        assert p.sum() == pytest.approx(1.0, abs=1e-6)
        assert result["predicted_class"] == codes[int(p.argmax())]
        assert result["confidence"] == pytest.approx(p.max())
        assert result["margin"] == pytest.approx(p.max() - np.sort(p)[-2])
        assert result["entropy"] == pytest.approx(-(p * np.log(p)).sum())
        assert result["heatmap_png"] is None
    # The same pixels uploaded or stored get the same answer as on the image's page.
    page_top = image_opinion(image=stored).top
    uploaded = body["results"][1]["probabilities"]
    assert [uploaded[s.code] for s in page_top] == pytest.approx([s.probability for s in page_top], abs=1e-6)


def test_heatmap_option_adds_a_png_of_each_images_size(version_with_ensemble, client):
    version_with_ensemble()

    response = client.post(
        URL,
        {"images": [upload("wide.png", png((80, 60))), upload("sq.png", png((96, 96), 2))], "heatmap": "true"},
        format="multipart",
    )

    assert response.status_code == 200, response.content
    sizes = []
    for result in response.json()["results"]:
        with Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"]))) as heatmap:
            assert heatmap.format == "PNG"
            sizes.append(heatmap.size)
    assert sizes == [(80, 60), (96, 96)]


def test_a_file_that_is_not_an_image_is_named_in_a_400(version_with_ensemble, client):
    version_with_ensemble()
    response = client.post(
        URL,
        {"images": [upload("ok.png", png((96, 96))), upload("notes.png", b"just some text", "text/plain")]},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("notes.png: not a JPEG, PNG, BMP or TIFF image")


@pytest.mark.parametrize(
    ("limit", "detail"),
    [
        ("HEMALOOP_INFERENCE_MAX_FILES", "3 images sent; at most 2 per request."),
        # Django refuses to parse more than DATA_UPLOAD_MAX_NUMBER_FILES parts before the view can count them.
        ("DATA_UPLOAD_MAX_NUMBER_FILES", "More than 2 files sent; at most 16 images per request."),
    ],
)
def test_too_many_files_is_a_json_400_naming_the_limit(version_with_ensemble, client, settings, limit, detail):
    version_with_ensemble()
    setattr(settings, limit, 2)
    files = [upload(f"{i}.png", png((32, 32), i)) for i in range(3)]
    response = client.post(URL, {"images": files}, format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"] == detail


def test_a_file_over_the_size_limit_is_named_in_a_413(version_with_ensemble, client, settings):
    version_with_ensemble()
    small, large = png((32, 32)), png((300, 300), 5)
    settings.HEMALOOP_INFERENCE_MAX_FILE_BYTES = len(large) - 1
    response = client.post(
        URL, {"images": [upload("small.png", small), upload("large.png", large)]}, format="multipart"
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("large.png: file is ")
    assert "larger than the limit" in response.json()["detail"]


def test_a_decompression_bomb_is_refused_before_decoding(version_with_ensemble, client):
    version_with_ensemble()
    buffer = io.BytesIO()
    Image.new("L", (5200, 5200)).save(buffer, format="PNG")  # 27 Mpx in a few kB: over the 25 Mpx default
    response = client.post(URL, {"images": [upload("bomb.png", buffer.getvalue())]}, format="multipart")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("bomb.png: decompression bomb: 5200×5200")


def test_no_images_is_a_400(version_with_ensemble, client):
    version_with_ensemble()
    response = client.post(URL, {"heatmap": "true"}, format="multipart")
    assert response.status_code == 400
    assert "images" in response.json()


def test_without_an_active_model_the_api_answers_409(version_with_ensemble, client):
    version_with_ensemble(ModelVersion.Status.CANDIDATE)
    response = client.post(URL, {"images": [upload("a.png", png((96, 96)))]}, format="multipart")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("No active model yet")


def test_admins_may_predict(version_with_ensemble, admin_user, api_client_for):
    version_with_ensemble()
    response = api_client_for(admin_user).post(URL, {"images": [upload("a.png", png((96, 96)))]}, format="multipart")
    assert response.status_code == 200


def test_requests_beyond_the_rate_get_429(version_with_ensemble, client, settings):
    version_with_ensemble()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"inference": "2/min"}}

    statuses = [
        client.post(URL, {"images": [upload("a.png", png((96, 96)))]}, format="multipart").status_code for _ in range(3)
    ]

    assert statuses == [200, 200, 429]


def test_the_rate_limit_is_per_user(version_with_ensemble, client, make_user, api_client_for, settings):
    version_with_ensemble()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"inference": "1/min"}}
    colleague = api_client_for(make_user(Role.RESEARCHER))

    def post(c):
        return c.post(URL, {"images": [upload("a.png", png((96, 96)))]}, format="multipart").status_code

    assert [post(client), post(client), post(colleague)] == [200, 429, 200]


def test_the_api_is_in_the_openapi_schema(researcher, client_for):
    schema = client_for(researcher).get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/inference/predict/"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"200", "400", "409", "413", "429"} <= set(operation["responses"])

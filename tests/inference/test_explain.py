"""The model's opinion on a stored image: top-3 from the stored prediction (or computed), the Grad-CAM overlay cached
on disk, the per-process ensemble cache, and a clear state when no model is active."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.storage import default_storage
from PIL import Image

from core.roles import Role
from inference import ensembles
from inference.ensembles import ensemble_cache_clear
from inference.errors import NoActiveModel
from inference.explain import heatmaps
from inference.explain.heatmaps import heatmap_cache_dir, heatmap_cache_path, heatmap_cache_prune, image_heatmap_png
from inference.explain.opinion import image_opinion, image_opinion_state
from inference.models import Prediction, ScoringJob
from inference.services.scoring import scoring_job_run
from inference.services.starts import scoring_enqueue
from tests.factories.annotation import image_make
from tests.inference.ensembles import version_factory
from training.models import ModelVersion
from training.services.versions import model_version_activate

pytestmark = pytest.mark.django_db


@pytest.fixture
def version_with_ensemble(make_version):
    yield version_factory(make_version)
    ensemble_cache_clear()  # the next test's versions live in other folders; free the memory


def test_top3_comes_from_the_stored_prediction_best_first(version_with_ensemble, batch, predict):
    version = version_with_ensemble()
    image = image_make(batch=batch)
    predict(version, image, {"myeloblast": 0.55, "lymphoblast": 0.25, "monocyte": 0.1})

    opinion = image_opinion(image=image)

    assert opinion.source == "stored"
    assert [(s.code, s.name) for s in opinion.top] == [
        ("myeloblast", "Myeloblast"),
        ("lymphoblast", "Lymphoblast"),
        ("monocyte", "Monocyte"),
    ]
    assert [s.probability for s in opinion.top] == pytest.approx([0.55, 0.25, 0.1])
    assert (opinion.model_version_id, opinion.model_version_name) == (version.pk, f"Model version {version.pk}")


def test_computed_opinion_equals_what_scoring_the_pool_stores(version_with_ensemble, batch):
    version = version_with_ensemble()
    image = image_make(batch=batch)

    computed = image_opinion(image=image)
    scoring_job_run(job_id=scoring_enqueue(model_version=version, scope=ScoringJob.Scope.ALL, actor=None).pk)
    stored = image_opinion(image=image)

    assert (computed.source, stored.source) == ("computed", "stored")
    assert [s.code for s in computed.top] == [s.code for s in stored.top]
    assert [s.probability for s in computed.top] == pytest.approx([s.probability for s in stored.top], abs=1e-6)
    probabilities = np.asarray(Prediction.objects.get(image=image, model_version=version).probabilities)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    assert [s.probability for s in stored.top] == pytest.approx(sorted(probabilities, reverse=True)[:3])
    assert stored.predicted.code == Prediction.objects.get(image=image).predicted_class.code


def test_heatmap_is_a_png_of_the_image_size_cached_on_disk(version_with_ensemble, batch, monkeypatch):
    version = version_with_ensemble()
    image = image_make(batch=batch)  # 96 x 96; the model sees 64 x 64
    predicted = image_opinion(image=image).predicted.code

    png = image_heatmap_png(image=image)

    with Image.open(io.BytesIO(png)) as decoded:
        assert (decoded.format, decoded.size, decoded.mode) == ("PNG", (image.width, image.height), "RGB")
    cached = _local(heatmap_cache_path(image=image, model_version=version, class_code=predicted))
    assert cached.read_bytes() == png

    # A reload reads the file: rendering again would fail here.
    def no_render(**kwargs):
        raise AssertionError("Grad-CAM recomputed despite the cache")

    monkeypatch.setattr(heatmaps, "heatmap_render", no_render)
    assert image_heatmap_png(image=image, class_code=predicted) == png
    with pytest.raises(AssertionError, match="recomputed"):
        image_heatmap_png(image=image, class_code="basophil" if predicted != "basophil" else "monocyte")


def test_heatmaps_of_two_classes_differ(version_with_ensemble, batch):
    version_with_ensemble()
    image = image_make(batch=batch)

    first = image_heatmap_png(image=image, class_code="neutrophil")
    second = image_heatmap_png(image=image, class_code="myeloblast")

    assert first != second


def test_the_ensemble_is_loaded_once_per_version_and_process(version_with_ensemble, batch, monkeypatch):
    loads = []
    real_load = ensembles.load_ensemble
    monkeypatch.setattr(ensembles, "load_ensemble", lambda out_dir: loads.append(out_dir) or real_load(out_dir))
    ensemble_cache_clear()
    old = version_with_ensemble(ModelVersion.Status.RETIRED)
    active = version_with_ensemble()
    images = [image_make(batch=batch) for _ in range(3)]

    for image in images:
        image_opinion(image=image)
        image_heatmap_png(image=image)
    image_opinion(image=images[0], model_version=old)

    assert [path.rsplit("/", 1)[-1] for path in loads] == [
        active.out_dir.rsplit("/", 1)[-1],
        old.out_dir.rsplit("/", 1)[-1],
    ]


def test_unknown_class_is_refused(version_with_ensemble, batch):
    version_with_ensemble()
    with pytest.raises(ValueError, match="Unknown class 'megakaryocyte'"):
        image_heatmap_png(image=image_make(batch=batch), class_code="megakaryocyte")


def test_no_active_model_is_a_state_not_an_error(version_with_ensemble, batch):
    version_with_ensemble(ModelVersion.Status.CANDIDATE)  # trained but not active: never shown
    image = image_make(batch=batch)

    state = image_opinion_state(image=image)

    assert (state.state, state.opinion) == ("no_model", None)
    assert "No active model yet" in state.message
    with pytest.raises(NoActiveModel):
        image_heatmap_png(image=image)


def test_an_active_version_without_files_says_so(make_version, batch):
    make_version(ModelVersion.Status.ACTIVE)  # registered with out_dir "models/none": nothing on disk
    state = image_opinion_state(image=image_make(batch=batch))
    assert state.state == "unavailable"
    assert "models/none" in state.message


# --- over HTTP ----------------------------------------------------------------------------------------


def test_the_opinion_api_reports_a_missing_model_as_a_state(batch, adjudicator, client_for):
    client = client_for(adjudicator)
    image = image_make(batch=batch)

    opinion = client.get(f"/api/inference/images/{image.id}/opinion/")
    heatmap = client.get(f"/api/inference/images/{image.id}/gradcam.png")

    assert opinion.status_code == 200
    assert opinion.json() == {
        "state": "no_model",
        "message": NoActiveModel.message,
        "model_version": None,
        "top": [],
        "source": "",
        "heatmap_url": "",
    }
    assert heatmap.status_code == 409
    assert heatmap.json()["detail"] == NoActiveModel.message


def test_the_heatmap_url_refuses_an_unknown_class(version_with_ensemble, batch, researcher, client_for):
    version_with_ensemble()
    image = image_make(batch=batch)
    response = client_for(researcher).get(f"/api/inference/images/{image.id}/gradcam.png", {"class": "blast"})
    assert response.status_code == 400
    assert "Unknown class 'blast'" in response.json()["class"][0]


# --- the heatmap cache when the active model changes ----------------------------------------------------


def _local(name: str) -> Path:
    """Where the (local) media storage keeps a cache name: these tests look at the files themselves."""
    return Path(default_storage.path(name))


def _cached(version: ModelVersion) -> list[str]:
    folder = _local(heatmap_cache_dir(model_version_id=version.pk))
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_activating_another_version_deletes_the_retired_versions_heatmaps(
    version_with_ensemble, batch, admin_user, django_capture_on_commit_callbacks, caplog
):
    first = version_with_ensemble()
    image = image_make(batch=batch)
    image_heatmap_png(image=image, class_code="neutrophil")
    image_heatmap_png(image=image, class_code="myeloblast")
    second = version_with_ensemble(ModelVersion.Status.CANDIDATE)
    kept = _local(heatmap_cache_path(image=image, model_version=second, class_code="neutrophil"))
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"png")
    assert len(_cached(first)) == 2

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        model_version_activate(version=second, actor=admin_user)
    assert len(_cached(first)) == 2  # nothing is deleted before the activation commits
    with caplog.at_level(logging.INFO, logger="inference.explain.heatmaps"):
        for callback in callbacks:
            callback()

    assert not _local(heatmap_cache_dir(model_version_id=first.pk)).exists()
    assert _cached(second) == [kept.name]  # the active version's cache stays
    assert f"deleted 2 cached heatmap(s) of model version {first.pk}" in caplog.text

    # Rolling back retires the second version: its cache goes, and the first one's maps are drawn afresh.
    with django_capture_on_commit_callbacks(execute=True):
        model_version_activate(version=first, actor=admin_user)
    assert not _local(heatmap_cache_dir(model_version_id=second.pk)).exists()
    image_heatmap_png(image=image, class_code="neutrophil")
    assert len(_cached(first)) == 1


def test_the_prune_keeps_the_active_version_and_unrelated_files(make_version, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path  # other tests' maps stay out of the count
    active = make_version(ModelVersion.Status.ACTIVE)
    retired = make_version(ModelVersion.Status.RETIRED)
    root = _local(heatmap_cache_dir(model_version_id=active.pk)).parent
    for version, names in ((active, ["a.png", "b.png"]), (retired, ["a.png", "b.png", "c.png.tmp"])):
        folder = _local(heatmap_cache_dir(model_version_id=version.pk))
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(b"png")
    (root / "README").write_text("not a version folder")

    assert heatmap_cache_prune() == 3

    assert _cached(active) == ["a.png", "b.png"]
    assert not _local(heatmap_cache_dir(model_version_id=retired.pk)).exists()
    assert (root / "README").exists()
    assert heatmap_cache_prune() == 0


# --- rate limit ---------------------------------------------------------------------------------------


@pytest.fixture
def _fresh_throttle_counts():
    # Throttle history lives in the cache, which outlives a test's database transaction.
    cache.clear()
    yield
    cache.clear()


def _rates(settings, **rates) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


@pytest.mark.usefixtures("_fresh_throttle_counts")
def test_opinion_and_heatmap_requests_beyond_the_explain_rate_get_429(batch, adjudicator, client_for, settings):
    _rates(settings, inference="60/min", explain="3/min")
    client = client_for(adjudicator)
    image = image_make(batch=batch)
    opinion, heatmap = f"/api/inference/images/{image.id}/opinion/", f"/api/inference/images/{image.id}/gradcam.png"

    statuses = [client.get(url).status_code for url in (opinion, heatmap, opinion, heatmap, opinion)]

    assert statuses == [200, 409, 200, 429, 429]  # one budget for both; 409: no active model yet
    assert "throttled" in client.get(opinion).json()["detail"]


@pytest.mark.usefixtures("_fresh_throttle_counts")
def test_the_explain_rate_is_per_user_and_apart_from_predict(batch, researcher, make_user, client_for, settings):
    _rates(settings, inference="60/min", explain="1/min")
    image = image_make(batch=batch)
    url = f"/api/inference/images/{image.id}/opinion/"
    client, colleague = client_for(researcher), client_for(make_user(Role.ADJUDICATOR))

    assert [client.get(url).status_code, client.get(url).status_code, colleague.get(url).status_code] == [
        200,
        429,
        200,
    ]
    # The prediction API counts in its own scope: a used-up "explain" budget does not stop it.
    assert client.post("/api/inference/predict/", {}).status_code == 400


def test_the_default_explain_rate_is_generous(settings):
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["explain"] == "600/min"


def test_the_explain_rate_limit_is_in_the_openapi_schema(researcher, client_for):
    paths = client_for(researcher).get("/api/schema/", {"format": "json"}).json()["paths"]
    assert "429" in paths["/api/inference/images/{image_id}/opinion/"]["get"]["responses"]
    assert "429" in paths["/api/inference/images/{image_id}/gradcam.png"]["get"]["responses"]

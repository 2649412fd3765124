"""The model's opinion on a stored image: top-3 from the stored prediction (or computed), the Grad-CAM overlay cached
on disk, the per-process ensemble cache, and a clear state when no model is active."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference import explain
from inference.models import Prediction
from inference.services import pool_score
from tests.annotation.imagedata import image_make
from tests.inference.ensembles import version_factory
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def version_with_ensemble(make_version):
    yield version_factory(make_version)
    explain.ensemble_cache_clear()  # the next test's versions live in other folders; free the memory


def test_top3_comes_from_the_stored_prediction_best_first(version_with_ensemble, batch, predict):
    version = version_with_ensemble()
    image = image_make(batch=batch)
    predict(version, image, {"myeloblast": 0.55, "lymphoblast": 0.25, "monocyte": 0.1})

    opinion = explain.image_opinion(image=image)

    assert opinion.source == "stored"
    assert [(s.code, s.name) for s in opinion.top] == [
        ("myeloblast", "Myeloblast"), ("lymphoblast", "Lymphoblast"), ("monocyte", "Monocyte"),
    ]
    assert [s.probability for s in opinion.top] == pytest.approx([0.55, 0.25, 0.1])
    assert (opinion.model_version_id, opinion.model_version_name) == (version.pk, f"Model version {version.pk}")


def test_computed_opinion_equals_what_scoring_the_pool_stores(version_with_ensemble, batch):
    version = version_with_ensemble()
    image = image_make(batch=batch)

    computed = explain.image_opinion(image=image)
    pool_score(model_version=version)
    stored = explain.image_opinion(image=image)

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
    predicted = explain.image_opinion(image=image).predicted.code

    png = explain.image_heatmap_png(image=image)

    with Image.open(io.BytesIO(png)) as decoded:
        assert (decoded.format, decoded.size, decoded.mode) == ("PNG", (image.width, image.height), "RGB")
    cached = explain.heatmap_cache_path(image=image, model_version=version, class_code=predicted)
    assert cached.read_bytes() == png

    # A reload reads the file: rendering again would fail here.
    def no_render(**kwargs):
        raise AssertionError("Grad-CAM recomputed despite the cache")

    monkeypatch.setattr(explain, "heatmap_render", no_render)
    assert explain.image_heatmap_png(image=image, class_code=predicted) == png
    with pytest.raises(AssertionError, match="recomputed"):
        explain.image_heatmap_png(image=image, class_code="basophil" if predicted != "basophil" else "monocyte")


def test_heatmaps_of_two_classes_differ(version_with_ensemble, batch):
    version_with_ensemble()
    image = image_make(batch=batch)

    first = explain.image_heatmap_png(image=image, class_code="neutrophil")
    second = explain.image_heatmap_png(image=image, class_code="myeloblast")

    assert first != second


def test_the_ensemble_is_loaded_once_per_version_and_process(version_with_ensemble, batch, monkeypatch):
    loads = []
    real_load = explain.load_ensemble
    monkeypatch.setattr(explain, "load_ensemble", lambda out_dir: loads.append(out_dir) or real_load(out_dir))
    explain.ensemble_cache_clear()
    old = version_with_ensemble(ModelVersion.Status.RETIRED)
    active = version_with_ensemble()
    images = [image_make(batch=batch) for _ in range(3)]

    for image in images:
        explain.image_opinion(image=image)
        explain.image_heatmap_png(image=image)
    explain.image_opinion(image=images[0], model_version=old)

    assert [path.rsplit("/", 1)[-1] for path in loads] == [active.out_dir.rsplit("/", 1)[-1],
                                                            old.out_dir.rsplit("/", 1)[-1]]


def test_unknown_class_is_refused(version_with_ensemble, batch):
    version_with_ensemble()
    with pytest.raises(ValueError, match="Unknown class 'megakaryocyte'"):
        explain.image_heatmap_png(image=image_make(batch=batch), class_code="megakaryocyte")


def test_no_active_model_is_a_state_not_an_error(version_with_ensemble, batch):
    version_with_ensemble(ModelVersion.Status.CANDIDATE)  # trained but not active: never shown
    image = image_make(batch=batch)

    state = explain.image_opinion_state(image=image)

    assert (state.state, state.opinion) == ("no_model", None)
    assert "No active model yet" in state.message
    with pytest.raises(explain.NoActiveModel):
        explain.image_heatmap_png(image=image)


def test_an_active_version_without_files_says_so(make_version, batch):
    make_version(ModelVersion.Status.ACTIVE)  # registered with out_dir "models/none": nothing on disk
    state = explain.image_opinion_state(image=image_make(batch=batch))
    assert state.state == "unavailable"
    assert "models/none" in state.message


# --- over HTTP ----------------------------------------------------------------------------------------


def test_the_opinion_api_reports_a_missing_model_as_a_state(batch, adjudicator, client_for):
    client = client_for(adjudicator)
    image = image_make(batch=batch)

    opinion = client.get(f"/api/inference/images/{image.id}/opinion/")
    heatmap = client.get(f"/api/inference/images/{image.id}/gradcam.png")

    assert opinion.status_code == 200
    assert opinion.json() == {"state": "no_model", "message": explain.NoActiveModel.message, "model_version": None,
                              "top": [], "source": "", "heatmap_url": ""}
    assert heatmap.status_code == 409
    assert heatmap.json()["detail"] == explain.NoActiveModel.message


def test_the_heatmap_url_refuses_an_unknown_class(version_with_ensemble, batch, researcher, client_for):
    version_with_ensemble()
    image = image_make(batch=batch)
    response = client_for(researcher).get(f"/api/inference/images/{image.id}/gradcam.png", {"class": "blast"})
    assert response.status_code == 400
    assert "Unknown class 'blast'" in response.json()["class"][0]

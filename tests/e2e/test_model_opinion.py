"""The model's opinion in a real browser: an adjudicator sees the top-3 on the consensus page, toggles the Grad-CAM
heatmap with its key and button, and the class hotkeys still decide and move on; the image page shows it too."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from annotation.models import CellClass
from annotation.services.labeling import annotation_submit
from core.roles import Role
from inference.ensembles import ensemble_cache_clear
from inference.models import Prediction
from tests.factories.annotation import batch_make, hold, image_make
from tests.helpers import PASSWORD
from tests.inference.ensembles import active_version_write
from training.ml.uncertainty import prediction_stats

pytestmark = pytest.mark.usefixtures("no_script_errors")


@pytest.fixture
def adjudicator(make_user):
    return make_user(Role.ADJUDICATOR, username="dr_adjudicator", password=PASSWORD)


@pytest.fixture
def disputed(make_user):
    """Two cells in consensus under an active model: the first with a stored prediction, the second without."""
    admin = make_user(Role.ADMIN)
    batch = batch_make(created_by=admin)
    image_make(batch=batch, final_label="neutrophil")
    image_make(batch=batch, final_label="lymphocyte")
    version = active_version_write(created_by=admin, name="e2e-opinion", temperature=1.5)
    classes = list(CellClass.objects.order_by("order").values_list("code", flat=True))
    cells = [image_make(batch=batch) for _ in range(2)]
    annotators = [make_user(Role.ANNOTATOR) for _ in range(2)]
    for cell in cells:
        for annotator, code in zip(annotators, ("neutrophil", "lymphocyte"), strict=True):
            hold(image=cell, annotator=annotator)
            annotation_submit(image_id=cell.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))
    top3 = {"myeloblast": 0.6137, "lymphoblast": 0.2211, "monocyte": 0.0873}
    probabilities = [top3.get(code, (1 - sum(top3.values())) / (len(classes) - 3)) for code in classes]
    top, confidence, margin, entropy = prediction_stats([probabilities])
    Prediction.objects.create(
        image=cells[0],
        model_version=version,
        probabilities=probabilities,
        predicted_class=CellClass.objects.get(code=classes[top[0]]),
        confidence=confidence[0],
        margin=margin[0],
        entropy=entropy[0],
    )
    yield {"cells": cells, "version": version}
    ensemble_cache_clear()


def _heatmap_loaded(page) -> bool:
    return page.evaluate(
        "() => { const img = document.querySelector('[data-opinion-heatmap] img');"
        " return img.complete && img.naturalWidth > 0; }"
    )


def test_adjudicator_sees_the_top3_and_toggles_the_heatmap_on_the_consensus_page(
    page, live_server, log_in, adjudicator, disputed, screenshot
):
    first, second = disputed["cells"]
    log_in(adjudicator)
    page.goto(f"{live_server.url}/annotation/consensus/")
    expect(page.locator("[data-image-id]")).to_have_attribute("data-image-id", str(first.id))
    expect(page.locator("html")).to_have_attribute("data-ready", "true")  # the first cell takes keys

    opinion = page.locator("[data-model-opinion]")
    expect(opinion).to_have_attribute("data-state", "ready")
    expect(opinion.get_by_role("heading")).to_have_text("Model opinion (decision support)")
    rows = opinion.locator(".opinion-top li")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Myeloblast")
    expect(rows.nth(0)).to_contain_text("61.4 %")
    expect(rows.nth(1)).to_contain_text("Lymphoblast")
    expect(rows.nth(2)).to_contain_text("Monocyte")
    expect(opinion.locator("[data-opinion-version]")).to_have_text(f"Model version {disputed['version'].pk}")
    heatmap = page.locator("[data-opinion-heatmap]")
    expect(heatmap).to_be_hidden()

    page.keyboard.press("h")
    expect(heatmap).to_be_visible()
    expect(page.locator("[data-stage]")).to_have_class(re.compile(r"\bwith-heatmap\b"))
    expect(heatmap.locator("figcaption")).to_have_text("Grad-CAM: where the model sees Myeloblast")
    page.wait_for_function("() => document.querySelector('[data-opinion-heatmap] img').naturalWidth > 0")
    assert _heatmap_loaded(page)
    screenshot("consensus-model-opinion")

    page.keyboard.press("h")
    expect(heatmap).to_be_hidden()
    toggle = opinion.get_by_role("button", name="Heatmap")
    toggle.click()
    expect(heatmap).to_be_visible()
    expect(toggle).to_have_attribute("aria-pressed", "true")

    # The class keys still decide, and the next cell brings its own (computed) opinion, heatmap still on.
    page.keyboard.press("6")
    expect(page.locator('.class-btn[data-code="lymphocyte"]')).to_have_class(re.compile(r"\bchosen\b"))
    page.keyboard.press("Enter")
    expect(page.locator("[data-image-id]")).to_have_attribute("data-image-id", str(second.id))
    expect(opinion).to_have_attribute("data-state", "ready")
    expect(rows).to_have_count(3)
    expect(opinion.locator("[data-opinion-version]")).to_contain_text("scored now")
    expect(heatmap).to_be_visible()
    expect(heatmap.locator("img")).to_have_attribute("src", re.compile(rf"/api/inference/images/{second.id}/gradcam"))
    page.wait_for_function("() => document.querySelector('[data-opinion-heatmap] img').naturalWidth > 0")

    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Consensus queue is empty")).to_be_visible()
    expect(page.locator("[data-opinion-slot]")).to_be_hidden()
    expect(heatmap).to_be_hidden()


def test_adjudicator_sees_the_opinion_beside_the_image_on_its_page(
    page, live_server, log_in, adjudicator, disputed, screenshot
):
    first = disputed["cells"][0]
    log_in(adjudicator)
    page.evaluate("() => localStorage.removeItem('hemaloop.showHeatmap')")
    page.goto(f"{live_server.url}/annotation/images/{first.id}/")
    # The page's module runs deferred: click and press only once it has wired the toggle.
    expect(page.locator("html")).to_have_attribute("data-ready", "true")

    opinion = page.locator("[data-model-opinion]")
    expect(opinion.locator(".opinion-top li").nth(0)).to_contain_text("Myeloblast")
    heatmap = page.locator("[data-opinion-heatmap]")
    expect(heatmap).to_be_hidden()
    opinion.get_by_role("button", name="Heatmap").click()
    expect(heatmap).to_be_visible()
    page.wait_for_function("() => document.querySelector('[data-opinion-heatmap] img').naturalWidth > 0")
    screenshot("image-detail-model-opinion")
    page.keyboard.press("h")
    expect(heatmap).to_be_hidden()

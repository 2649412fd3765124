"""The loop in a real browser: an admin picks the entropy strategy, rescores the pool with the active model,
watches the pass finish, and the annotator's next cell is then the one the model is least sure about."""

from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect

from core.roles import Role
from inference.ensembles import ensemble_cache_clear
from inference.models import ActiveLearningSettings, Prediction, ScoringJob
from tests.factories.annotation import batch_make, image_make
from tests.helpers import PASSWORD
from tests.inference.ensembles import active_version_write

pytestmark = pytest.mark.usefixtures("no_script_errors")


@pytest.fixture
def active_model(make_user):
    """A tiny random ensemble, active, and a pool of six distinct unlabeled cells (plus two labeled ones)."""
    admin = make_user(Role.ADMIN, username="dr_admin", password=PASSWORD)
    batch = batch_make(created_by=admin)
    image_make(batch=batch, final_label="neutrophil")
    image_make(batch=batch, final_label="lymphocyte")
    version = active_version_write(created_by=admin, name="e2e-loop")
    pool = [image_make(batch=batch) for _ in range(6)]
    yield {"admin": admin, "version": version, "pool": pool}
    ensemble_cache_clear()


def test_admin_rescores_with_entropy_and_the_annotator_gets_the_most_uncertain_cell(
    page, live_server, log_in, make_user, active_model, screenshot
):
    admin, version, pool = active_model["admin"], active_model["version"], active_model["pool"]
    log_in(admin)

    page.goto(f"{live_server.url}/inference/settings/")
    page.get_by_label("Selection strategy").select_option("entropy")
    page.get_by_label("Exploration share").fill("0")
    page.get_by_label("Class cap (share per predicted class)").fill("1")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_label("Selection strategy")).to_have_value("entropy")
    screenshot("al-settings")
    row = ActiveLearningSettings.objects.get()
    assert (row.strategy, row.exploration, row.max_class_share) == ("entropy", 0.0, 1.0)

    page.goto(f"{live_server.url}/inference/scoring/")
    page.get_by_role("button", name="Rescore now").click()
    job = ScoringJob.objects.get()
    job_row = page.locator(f'#scoring-jobs tr[data-job="{job.pk}"]')
    expect(job_row.locator('[data-field="status"]')).to_have_text("Succeeded")
    expect(job_row.locator("[data-progress-bar]")).to_have_attribute("aria-valuenow", "100")
    screenshot("al-scoring")

    scored = {p.image_id: p for p in Prediction.objects.filter(model_version=version)}
    assert set(scored) >= {cell.id for cell in pool}
    most_uncertain = max(pool, key=lambda cell: (scored[cell.id].entropy, -cell.id))
    entropies = [scored[cell.id].entropy for cell in pool]
    assert len(set(np.round(entropies, 9))) > 1, "the random model should not be equally unsure of every cell"

    annotator = make_user(Role.ANNOTATOR, username="dr_annotator", password=PASSWORD)
    page.get_by_role("button", name="Log out").click()
    log_in(annotator)
    page.goto(f"{live_server.url}/annotation/label/")
    # The label page knows the cell by its public id only (annotators never see database ids).
    expect(page.locator("[data-cell]")).to_have_attribute("data-cell", most_uncertain.public_id)
    # Blind: nothing of the model reaches the annotator's page.
    body = page.content()
    assert "entropy" not in body.lower()
    assert "model opinion" not in body.lower()

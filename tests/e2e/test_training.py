"""Retraining in the browser: start a smoke run, watch it finish, read the report, activate, follow a live run."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process
from core.roles import Role
from tests.helpers import PASSWORD, demo_subset
from training.models import TrainingRun


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_admin_retrains_from_the_page(
    page, live_server, log_in, make_user, screenshot, settings, tmp_path, no_script_errors
):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.HEMALOOP_RELEASE_VALIDATION_FRACTION = 0.25
    admin = make_user(Role.ADMIN, password=PASSWORD)
    source = demo_subset(target=tmp_path / "demo")
    batch = import_batch_create(
        created_by=admin, source=source, source_name="demo", trusted=True, csv_path=source / "cases.csv", enqueue=False
    )
    import_batch_process(batch=batch)
    log_in(admin)
    page.goto(f"{live_server.url}/training/")
    page.get_by_label("Profile").select_option("smoke")
    screenshot("training-home")
    # Eager Celery: the POST trains the smoke ensemble before it redirects; on a loaded 2-core machine that takes
    # longer than the page's default 15 s, and the click itself waits for the navigation it starts.
    page.get_by_role("button", name="Start training").click(timeout=180_000)
    page.wait_for_url("**/training/runs/*/", timeout=180_000)
    expect(page.locator('[data-field="status"]')).to_have_text("Succeeded")
    expect(page.locator("#curves polyline")).to_have_count(4)
    screenshot("training-run")
    page.get_by_role("link", name="model version").click()
    expect(page.locator("#summary tbody tr")).to_have_count(3)
    for image in page.locator("#plots img").all():
        image.scroll_into_view_if_needed()
    page.wait_for_load_state("networkidle")
    page.wait_for_function("[...document.querySelectorAll('#plots img')].every(i => i.complete)")
    natural = page.eval_on_selector_all("#plots img", "imgs => imgs.map(i => i.naturalWidth)")
    assert natural
    assert all(w > 0 for w in natural), natural
    screenshot("training-model")
    page.get_by_role("button", name="Activate").click(timeout=120_000)
    # Eager Celery again: activation scores the pool inside the request.
    expect(page.locator("h1 .badge")).to_have_text("Active", timeout=120_000)
    # Live polling: a running run's page follows the row.
    run = TrainingRun.objects.create(
        dataset_version=TrainingRun.objects.first().dataset_version,
        profile="smoke",
        config={},
        requested_by=admin,
        status="running",
        model_count=2,
        max_epochs=2,
        model_name="test_efficientnet",
    )
    page.goto(f"{live_server.url}/training/runs/{run.pk}/")
    TrainingRun.objects.filter(pk=run.pk).update(
        epoch=2,
        batch=3,
        batches_total=4,
        done=7,  # 1 epoch of 4 batches, then 3, of 2 models x 2 epochs x 4 batches
        total=16,
        history=[{"model": "test_efficientnet", "model_index": 0, "epoch": 1, "val_macro_f1": 0.3, "val_loss": 2.0}],
    )
    expect(page.locator('[data-field="percent"]')).to_have_text("43%")
    expect(page.locator("#curves circle")).to_have_count(1)
    screenshot("training-live")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator('[data-field="status"]')).to_have_text("Running")
    expect(page.get_by_text("stopping after this batch")).to_be_visible()

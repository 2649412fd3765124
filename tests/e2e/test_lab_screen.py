"""In a real browser: an admin imports a synthetic lab table (and sees its report), starts a small study (it runs on
the eager worker inside the request), reads both variants side by side, activates the study's model as the lab
screen, and finds the malignancy probability on a case page and the case list sorted by it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from core.roles import Role
from labscreen.ml.cohort import synthetic_cohort
from labscreen.ml.table import table_csv_text
from labscreen.models import CaseScreen
from tests.helpers import PASSWORD


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_admin_imports_labs_runs_a_study_and_activates_the_screen(
    page, live_server, log_in, make_user, tmp_path, screenshot, no_script_errors
):
    admin = make_user(Role.ADMIN, password=PASSWORD)
    cohort = tmp_path / "labs.csv"
    cohort.write_text(table_csv_text(synthetic_cohort(n_cases=45, seed=5, prefix="E2E")))
    log_in(admin)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Lab screen").click()
    page.wait_for_url("**/labscreen/")
    page.locator("#lab-import input[type=file]").set_input_files(str(cohort))
    page.get_by_label("Create cases that do not exist yet").check()
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-summary")).to_contain_text("45 measurement sets imported (45 new cases)")
    expect(page.locator("[data-synthetic]").first).to_be_visible()
    expect(page.locator("#import-report tbody tr")).to_have_count(45)

    page.get_by_role("link", name="Lab screen").first.click()
    expect(page.locator("#cohort-counts")).to_contain_text("malignant")
    page.get_by_label("Folds").fill("3")
    page.get_by_label("Neural network epochs").fill("10")
    page.get_by_label("Bootstrap resamples").fill("20")
    for model in ("SGD", "Random forest", "Decision tree", "Neural network 128-64-1"):
        page.get_by_label(model, exact=True).uncheck()
    # The study runs inside this request (eager Celery): give a loaded machine time.
    page.get_by_role("button", name="Start study").click(timeout=180_000)
    page.wait_for_url("**/labscreen/studies/*/", timeout=180_000)
    expect(page.locator("h1 [data-field=status]")).to_have_text("Succeeded")
    expect(page.locator("#synthetic-note")).to_be_visible()
    rows = page.locator("#auc-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first.locator("[data-field=published-auc]")).to_contain_text("±")
    expect(rows.first.locator("[data-field=leak-free-auc]")).to_contain_text("±")
    expect(page.locator("#plots img")).to_have_count(5)
    assert all(page.locator("#plots img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"))
    expect(page.locator('#downloads a[data-file="summary"]')).to_be_visible()
    screenshot("lab-study")

    page.get_by_role("button", name="Activate as lab screen").click()
    expect(page.locator("#screen-badge")).to_be_visible()
    top = CaseScreen.objects.order_by("-probability").select_related("case").first()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Cases").click()
    page.locator('a[data-sort="lab"]').click()
    page.wait_for_url("**/cases/?sort=-lab")
    expect(page.locator("#case-list tbody tr").first).to_have_attribute("data-case", top.case.code)
    page.get_by_role("link", name=top.case.code).click()
    expect(page.locator('#lab-screen [data-field="lab-probability"]')).to_have_text(f"{round(100 * top.probability)}%")
    expect(page.locator("#lab-screen")).to_contain_text("decision support, not a diagnosis")
    expect(page.locator("#lab-screen [data-synthetic]")).to_be_visible()
    screenshot("case-lab-screen")

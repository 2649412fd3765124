"""In a real browser: a researcher opens Cases, sorts by blast fraction, opens the most blast-rich case and sees
the decision-support notice, the 20% flag, the counts and the chart of both differentials."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from annotation.models import Case, CellClass
from core.jobs import JobStatus
from core.roles import Role
from inference.models import Prediction
from tests.factories.annotation import batch_make, image_make
from tests.helpers import PASSWORD
from training.models import ModelVersion, TrainingRun


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def _version(user) -> ModelVersion:
    from releases.services.versions import dataset_version_create

    run = TrainingRun.objects.create(
        dataset_version=dataset_version_create(created_by=user),
        profile="smoke",
        config={},
        requested_by=user,
        status=JobStatus.SUCCEEDED,
    )
    return ModelVersion.objects.create(
        run=run, out_dir="models/none", config={}, temperature=1.0, metrics={}, status=ModelVersion.Status.ACTIVE
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_researcher_sorts_cases_by_blasts_and_reads_a_flagged_case(page, live_server, log_in, make_user, screenshot):
    researcher = make_user(Role.RESEARCHER, password=PASSWORD)
    batch = batch_make(created_by=researcher)
    # AML-07: 6 of 20 white cells are blasts (30%, flagged); ALL-03: 2 of 20 (10%); N-01: none.
    seeds = {
        "AML-07": {"myeloblast": 5, "lymphoblast": 1, "neutrophil": 8, "lymphocyte": 4, "monocyte": 2},
        "ALL-03": {"lymphoblast": 2, "neutrophil": 10, "lymphocyte": 8},
        "N-01": {"neutrophil": 12, "lymphocyte": 6, "eosinophil": 2},
    }
    images = {}
    for code, labels in seeds.items():
        case = Case.objects.create(code=code, diagnosis="AML" if code.startswith("AML") else "")
        images[code] = [
            image_make(batch=batch, case=case, final_label=label, with_thumbnail=False)
            for label, n in labels.items()
            for _ in range(n)
        ]
    version = _version(researcher)
    classes = dict(CellClass.objects.values_list("code", "pk"))
    # The model sees 8 blasts among AML-07's 20 cells (40%): myeloblasts where the experts said lymphocyte too.
    for index, image in enumerate(images["AML-07"]):
        code = "myeloblast" if index < 8 else image.final_label.code
        Prediction.objects.create(
            image=image,
            model_version=version,
            probabilities=[],
            predicted_class_id=classes[code],
            confidence=0.9,
            margin=0.8,
            entropy=0.4,
        )
    log_in(researcher)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Cases").click()
    page.wait_for_url("**/cases/")
    expect(page.get_by_text("Decision support, not a diagnosis")).to_be_visible()
    # Most blasts first by default; the column header toggles the order.
    expect(page.locator('a[data-sort="blasts"]')).to_contain_text("▼")
    page.locator('a[data-sort="blasts"]').click()
    page.wait_for_url("**/cases/?sort=blasts")
    expect(page.locator("#case-list tbody tr")).to_have_count(3)
    expect(page.locator("#case-list tbody tr").first).to_have_attribute("data-case", "N-01")
    page.locator('a[data-sort="blasts"]').click()
    page.wait_for_url("**/cases/?sort=-blasts")
    rows = page.locator("#case-list tbody tr")
    expect(rows.first).to_have_attribute("data-case", "AML-07")
    expect(rows.nth(1)).to_have_attribute("data-case", "ALL-03")
    expect(page.locator('#case-list tr[data-case="AML-07"] [data-field="flag"]')).to_contain_text("≥ 20% blasts")
    expect(page.locator('#case-list tr[data-case="ALL-03"] [data-field="flag"]')).to_have_text("")
    screenshot("cases-list")

    page.get_by_role("link", name="AML-07").click()
    expect(page.locator("h1")).to_have_text("Case AML-07")
    expect(page.locator("#blast-flag")).to_contain_text("final labels: 30.0%")
    expect(page.locator("#blast-flag")).to_contain_text("model: 40.0%")
    expect(page.locator('[data-field="ratio"]')).to_have_text("5.00 : 1")
    expect(page.locator('[data-field="model-ratio"]')).to_contain_text("∞")
    expect(page.locator('#differential tr[data-class="myeloblast"] [data-field="label-count"]')).to_have_text("5")
    expect(page.locator('#differential tr[data-class="myeloblast"] [data-field="model-count"]')).to_have_text("8")
    chart = page.locator("#chart svg[role=img]")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar-label")).to_have_count(12)
    expect(chart.locator("rect.bar-model")).to_have_count(12)
    widths = chart.locator("rect.bar-label").evaluate_all("rects => rects.map(r => r.getBBox().width)")
    assert max(widths) > 0
    screenshot("case-detail")

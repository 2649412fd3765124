"""Studies as jobs (start, run on the eager worker, cancel, refuse), their page and downloads, activating the lab
screen, the case page's probability and the case list's sort, the demo's lab table; annotators see none of it."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from annotation.models import Case
from core.errors import PermissionRefused
from core.jobs import JobStatus
from core.roles import Role
from labscreen.models import CaseScreen, LabImport, LabStudy, MeasurementSet
from labscreen.services.execute import lab_study_execute
from labscreen.services.screen import ScreenRefused, screen_activate
from labscreen.services.studies import LabStudyRefused, lab_study_cancel, lab_study_start
from tests.factories.annotation import batch_make, image_make

pytestmark = pytest.mark.django_db

FAST = {"folds": 3, "models": ("logistic_regression", "svm", "neural_network"), "nn_max_iter": 20, "bootstrap": 50}


@pytest.fixture
def finished_study(lab_cohort, researcher, media, django_capture_on_commit_callbacks):
    lab_cohort(60)
    with django_capture_on_commit_callbacks(execute=True):  # Celery is eager: the study runs here
        study = lab_study_start(requested_by=researcher, title="t", **FAST)
    study.refresh_from_db()
    assert study.status == JobStatus.SUCCEEDED, study.error
    return study


def test_a_study_runs_both_variants_and_keeps_its_files(finished_study):
    study = finished_study
    assert study.cases == 60
    assert study.synthetic is True
    assert study.done == study.total > 0
    assert set(study.results["variants"]) == {"published", "leak_free"}
    assert study.results["screen_model"] in ("logistic_regression", "neural_network")
    assert {"study", "summary", "roc", "correlations", "metrics", "model"} <= set(study.files)


def test_the_progress_api_answers_the_common_job_shape(finished_study, api_client_for, researcher):
    answer = api_client_for(researcher).get(f"/api/labscreen/studies/{finished_study.pk}/").json()

    assert answer["kind"] == "lab_study"
    assert answer["finished"] is True
    assert answer["percent"] == 100
    assert answer["done"] == answer["total"] == finished_study.total
    assert answer["synthetic"] is True
    assert answer["cases"] == 60


def test_the_study_page_shows_both_variants_and_serves_the_downloads(finished_study, client_for, researcher):
    client = client_for(researcher)
    page = client.get(f"/labscreen/studies/{finished_study.pk}/").content.decode()

    assert "As published" in page
    assert "Leak-free" in page
    assert "Synthetic data" in page
    assert 'data-model="logistic_regression"' in page
    summary = client.get(f"/labscreen/studies/{finished_study.pk}/files/summary")
    assert summary["Content-Type"] == "text/csv"
    assert b"published_mean" in b"".join(summary.streaming_content)
    figures = json.loads(b"".join(client.get(f"/labscreen/studies/{finished_study.pk}/files/study").streaming_content))
    assert figures["cohort"]["cases_in"] == 60
    png = client.get(f"/labscreen/studies/{finished_study.pk}/files/roc_leak_free")
    assert b"".join(png.streaming_content)[:4] == b"\x89PNG"
    # The pickled screen model never leaves the server.
    assert client.get(f"/labscreen/studies/{finished_study.pk}/files/model").status_code == 404


def test_activation_scores_every_case_and_the_case_pages_show_it(finished_study, admin_user, client_for, annotator):
    with pytest.raises(PermissionRefused):
        screen_activate(study=finished_study, actor=annotator)
    screen_activate(study=finished_study, actor=admin_user)

    assert CaseScreen.objects.filter(study=finished_study).count() == 60
    case = Case.objects.get(code="LAB-0001")
    probability = CaseScreen.objects.get(case=case).probability
    client = client_for(admin_user)
    page = client.get(f"/cases/{case.pk}/").content.decode()
    assert 'id="lab-screen"' in page
    assert f"{round(100 * probability)}%" in page
    assert "decision support" in page
    summary = client.get(f"/cases/{case.pk}/summary.json").json()
    assert summary["lab_screen"]["screen"]["malignancy_probability"] == pytest.approx(probability)
    listed = client.get("/cases/?sort=-lab").content.decode()
    order = [c.code for c in Case.objects.filter(lab_screens__isnull=False).order_by("-lab_screens__probability")]
    positions = [listed.index(f'data-case="{code}"') for code in order[:10]]
    assert positions == sorted(positions)
    assert client_for(annotator).get(f"/cases/{case.pk}/").status_code == 403


def test_a_viewer_who_may_still_label_a_cell_of_the_case_sees_no_lab_screen(
    finished_study, admin_user, make_user, client_for
):
    screen_activate(study=finished_study, actor=admin_user)
    dual = make_user(Role.RESEARCHER)
    dual.groups.add(Group.objects.get(name=Role.ANNOTATOR.value))
    open_case, clear_case = Case.objects.get(code="LAB-0001"), Case.objects.get(code="LAB-0002")
    image_make(batch=batch_make(created_by=admin_user), case=open_case)  # needs labels: dual may still label it
    client = client_for(dual)

    page = client.get(f"/cases/{open_case.pk}/").content.decode()
    assert 'data-field="lab-hidden"' in page
    assert 'data-field="lab-probability"' not in page
    assert client.get(f"/cases/{open_case.pk}/summary.json").json()["lab_screen"] == {
        "hidden": True, "reason": "You may still label cells of this case.",
    }  # fmt: skip
    assert 'data-field="lab-probability"' in client.get(f"/cases/{clear_case.pk}/").content.decode()
    # No probability for that case: it sorts last (the second page of 60 cases), with a dash.
    listed = client.get("/cases/?sort=-lab&page=2").content.decode()
    assert listed.rindex("data-case=") == listed.index('data-case="LAB-0001"')
    row = listed[listed.index('data-case="LAB-0001"') :]
    assert row[row.index('data-field="lab-probability"') :].split("</td>")[0].endswith("—")


def test_a_new_import_is_scored_by_the_active_screen(
    finished_study, admin_user, lab_cohort, django_capture_on_commit_callbacks
):
    screen_activate(study=finished_study, actor=admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        lab_cohort(5, seed=9, prefix="NEW")
    assert CaseScreen.objects.filter(case__code__startswith="NEW-").count() == 5


def test_too_few_cases_for_the_folds_is_refused(lab_cohort, researcher):
    lab_cohort(12)
    with pytest.raises(LabStudyRefused, match="stratified folds"):
        lab_study_start(requested_by=researcher, folds=10)
    assert LabStudy.objects.count() == 0


def test_annotators_and_adjudicators_cannot_start(lab_cohort, annotator, adjudicator):
    lab_cohort(30)
    for user in (annotator, adjudicator):
        with pytest.raises(PermissionRefused):
            lab_study_start(requested_by=user, **FAST)


def test_cancel_a_queued_study_and_a_running_one_stops(lab_cohort, researcher, make_user, media):
    lab_cohort(30)
    study = LabStudy.objects.create(requested_by=researcher, config={**FAST, "models": list(FAST["models"])})
    other = make_user(Role.RESEARCHER)
    with pytest.raises(LabStudyRefused, match="who started"):
        lab_study_cancel(study=study, actor=other)
    assert lab_study_cancel(study=study, actor=researcher).status == JobStatus.CANCELLED
    running = LabStudy.objects.create(
        requested_by=researcher, config={**FAST, "models": list(FAST["models"])}, cancel_requested=True
    )
    assert lab_study_execute(study=running).status == JobStatus.CANCELLED
    assert not (media / "labscreen" / f"study-{running.pk}").exists()


def test_activating_an_unfinished_study_is_refused(admin_user):
    study = LabStudy.objects.create(requested_by=admin_user, config={})
    with pytest.raises(ScreenRefused):
        screen_activate(study=study, actor=admin_user)


def test_the_demo_gets_a_synthetic_lab_table_once(admin_user):
    for code, diagnosis in (("DEMO-001", "AML"), ("DEMO-002", "other")):
        Case.objects.create(code=code, diagnosis=diagnosis)
    call_command("load_demo_labs")
    call_command("load_demo_labs")

    assert LabImport.objects.filter(synthetic=True, status="succeeded").count() == 1
    outcomes = dict(MeasurementSet.objects.values_list("case__code", "outcome"))
    assert outcomes == {"DEMO-001": "malignant", "DEMO-002": "non_malignant"}

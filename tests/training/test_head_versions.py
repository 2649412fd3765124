"""The Training page lists the queue's head versions (backbone, head, temperature, CV macro-F1, labels used), says
whether a refreshed head becomes active by itself or a pinned ensemble keeps it a candidate, and lets admins (only)
queue a refresh from there."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from core.roles import Role
from inference.models import HeadRefreshJob
from tests.factories.training import ModelVersionFactory
from training.models import ModelVersion

pytestmark = pytest.mark.django_db

SPACE = "bundled:tf_efficientnet_lite0@224x224"


def _head(**fields) -> ModelVersion:
    return ModelVersionFactory(
        kind=ModelVersion.Kind.HEAD,
        run=None,
        out_dir="models/heads/space1-labels40.safetensors",
        config={
            "backbone": {"name": "tf_efficientnet_lite0", "image_size": [224, 224], "source": "bundled"},
            "space": SPACE,
            "classes": ["neutrophil", "lymphocyte"],
            "labels": {"count": 40, "last": None},
            "head": {"l2": 0.001, "max_iter": 8, "cv_max_iter": 15, "folds": 3, "seed": 0},
            "based_on": None,
        },
        temperature=1.734,
        metrics={"cv_macro_f1": 0.8124, "cv_accuracy": 0.85, "cv_folds": 3, "labeled": 40, "cases": 7},
        **fields,
    )


def _page(client: Client) -> str:
    return html.unescape(client.get("/training/").content.decode())


def _unmasked(content: bytes) -> bytes:
    """A page without its CSRF token, which Django masks afresh on every response."""
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)


def _section(page: str) -> str:
    return page.split('id="head-versions"', 1)[1].split("</section>", 1)[0]


def test_the_training_page_lists_head_versions_and_a_pinned_ensemble_keeps_them_candidates(
    settings, client_for, researcher, make_version
):
    settings.HEMALOOP_HEAD_AUTO_ACTIVATE = True
    settings.HEMALOOP_INDEX_AUTO = True
    settings.HEMALOOP_HEAD_REFRESH_EVERY = 100
    head = _head()
    ensemble = make_version(ModelVersion.Status.ACTIVE)
    section = _section(_page(client_for(researcher)))
    row = section.split(f'data-head="{head.pk}"', 1)[1].split("</tr>", 1)[0]
    assert SPACE in row
    assert "linear, L2 0.001" in row
    assert "1.734" in row
    assert "0.812" in row
    assert "(3 folds)" in row
    assert "40 final labels from 7 cases" in row
    assert "Candidate" in row
    assert f'data-head="{ensemble.pk}"' not in section  # only heads here
    assert 'data-auto-activate="on"' in section
    assert f'data-pinned="{ensemble.pk}"' in section
    assert "A head is refreshed every 100 new final labels and on request" in section
    assert (
        f"stays a candidate and the queue keeps its order: version {ensemble.pk}, a fully trained ensemble" in section
    )
    # Researchers read the list; the button is the admins'.
    assert 'id="head-refresh-form"' not in section


def test_the_head_policy_follows_the_settings_and_the_active_version(settings, client_for, admin_user):
    settings.HEMALOOP_HEAD_AUTO_ACTIVATE = True
    settings.HEMALOOP_INDEX_AUTO = True
    settings.HEMALOOP_HEAD_REFRESH_EVERY = 25
    _head(status=ModelVersion.Status.ACTIVE)
    client = client_for(admin_user)
    section = _section(_page(client))
    assert "data-pinned" not in section
    assert "every 25 new final labels" in section
    assert "becomes active by itself and re-orders the queue (HEMALOOP_HEAD_AUTO_ACTIVATE is on)" in section
    assert 'id="head-refresh-form"' in section

    settings.HEMALOOP_HEAD_AUTO_ACTIVATE = False
    settings.HEMALOOP_HEAD_REFRESH_EVERY = 0
    section = _section(_page(client))
    assert 'data-auto-activate="off"' in section
    assert "on request only (automatic refresh off)" in section
    assert "stays a candidate (HEMALOOP_HEAD_AUTO_ACTIVATE is off) until an admin activates it" in section


def test_the_training_page_button_queues_a_refresh_and_comes_back(
    client_for, admin_user, django_capture_on_commit_callbacks
):
    client = client_for(admin_user)
    page = _page(client)
    form = page.split('id="head-refresh-form"', 1)[0].rsplit("<form", 1)[1]
    assert 'action="/inference/scoring/refresh/"' in form
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/inference/scoring/refresh/", {"back": "training"})
    assert response.status_code == 302
    assert response["Location"] == "/training/"
    job = HeadRefreshJob.objects.get()
    assert (job.reason, job.requested_by, job.status) == (HeadRefreshJob.Reason.REQUESTED, admin_user, "queued")
    assert len(callbacks) == 1  # the task, sent after commit
    assert f"Refresh {job.pk} is queued" in _page(client)

    # A second click while it is queued is refused, on the same page; an unknown `back` is no redirect target.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = client.post("/inference/scoring/refresh/", {"back": "https://elsewhere.example/"})
    assert again["Location"] == "/inference/scoring/"
    assert callbacks == []
    assert HeadRefreshJob.objects.count() == 1
    assert f"Refresh {job.pk} is still queued or running" in html.unescape(
        client.get("/inference/scoring/").content.decode()
    )


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.RESEARCHER, Role.ADJUDICATOR, None])
def test_only_admins_refresh_and_others_get_the_answer_of_any_admin_action(role, make_user, client_for):
    client = client_for(make_user(role))
    refused = client.post("/inference/scoring/refresh/", {"back": "training"})
    start = client.post("/training/start/", {"dataset_version": "", "profile": "smoke"})
    activate = client.post("/training/models/999999/activate/")
    assert refused.status_code == start.status_code == activate.status_code == 403
    assert _unmasked(refused.content) == _unmasked(start.content) == _unmasked(activate.content)
    assert b"Refresh" not in refused.content
    assert not HeadRefreshJob.objects.exists()


def test_anonymous_refresh_goes_to_the_login_page_like_any_admin_action(client):
    refused = client.post("/inference/scoring/refresh/", {"back": "training"})
    start = client.post("/training/start/")
    assert refused.status_code == start.status_code == 302
    assert refused["Location"].split("?")[0] == start["Location"].split("?")[0]
    assert not HeadRefreshJob.objects.exists()

"""Who may call what, for every page and API endpoint: one table of (url, method) x role -> status, expanded
into one test per cell (the way CVAT generates its permission tests), and a walk over every URL pattern so that
an endpoint added without a row here fails the suite. A refused request changes nothing and streams no byte.

Tests elsewhere check what a permitted caller sees; whether a role may call an endpoint at all belongs here."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from rest_framework.test import APIClient

from annotation.models import Annotation, Case, CellImage, ImportBatch
from core.roles import Role
from inference.models import ActiveLearningSettings, ScoringJob
from releases.models import DatasetArchive, DatasetVersion
from releases.services.archive_request import archive_build_start
from tests.factories.annotation import batch_make, image_make
from tests.factories.releases import DatasetVersionFactory
from tests.factories.training import ModelVersionFactory
from tests.helpers import cell_png, next_variant
from training.models import ModelVersion, TrainingRun

ROLES = ("anonymous", "annotator", "adjudicator", "researcher", "admin", "norole")

# "login": redirected to the login page (pages refuse anonymous users that way; the API answers 403).
# {image}, {batch}, {case}, {version} (a cut version with its archive built) and {job} (a scoring job) are filled
# with real rows, {cell} with {image}'s public id (annotators know a cell by nothing else: its database id is a
# 404 to them, as an unknown id is); 999999 names a row that does not exist. A plain POST sends an empty body, so a
# permitted caller mostly gets a validation answer (a version's title is optional: the API cuts one); POST:<body>
# sends that entry of BODIES, the form or upload a page really sends, so a permitted caller does what the endpoint
# is for.
TABLE = """
url                                         method  anonymous annotator adjudicator researcher admin norole
/                                           GET     login     200       200         200        200   200
/accounts/logout/                           POST    login     302       302         302        302   302
/accounts/token/                            GET     login     200       200         200        200   200
/accounts/token/                            POST    login     302       302         302        302   302
/annotation/images/                         GET     login     403       403         200        200   403
/annotation/images/unavailable/             GET     login     403       403         403        200   403
/annotation/images/unavailable/             POST    login     403       403         403        302   403
/annotation/images/{image}/                 GET     login     403       200         200        200   403
/annotation/images/{image}/reopen/          POST    login     403       200         403        200   403
/annotation/images/{image}/file             GET     login     404       200         200        200   403
/annotation/images/{image}/thumb            GET     login     404       200         200        200   403
/annotation/imports/                        GET     login     403       403         403        200   403
/annotation/imports/new/                    GET     login     403       403         403        200   403
/annotation/imports/new/                    POST    login     403       403         403        200   403
/annotation/imports/{batch}/                GET     login     403       403         403        200   403
/annotation/label/                          GET     login     200       403         403        403   403
/annotation/consensus/                      GET     login     403       200         403        200   403
/annotation/agreement/                      GET     login     403       200         200        200   403
/admin/                                     GET     login     302       302         302        200   302
/admin/annotation/cellclass/                GET     login     302       302         302        200   302
/admin/annotation/cellimage/                GET     login     302       302         302        200   302
/admin/annotation/importbatch/              GET     login     302       302         302        200   302
/admin/auth/user/                           GET     login     302       302         302        200   302
/admin/authtoken/tokenproxy/                GET     login     302       302         302        200   302
/api/accounts/me/                           GET     403       200       200         200        200   200
/api/accounts/token/                        POST    400       400       400         400        400   400
/api/accounts/token/                        DELETE  403       204       204         204        204   204
/api/annotation/taxonomy/                   GET     403       200       200         200        200   403
/api/annotation/images/                     GET     403       403       403         200        200   403
/api/annotation/images/{image}/             GET     403       403       403         200        200   403
/api/annotation/batches/                    GET     403       403       403         403        200   403
/api/annotation/batches/                    POST    403       403       403         403        400   403
/api/annotation/batches/{batch}/            GET     403       403       403         403        200   403
/api/annotation/batches/{batch}/items/      GET     403       403       403         403        200   403
/api/annotation/batches/{batch}/progress/   GET     403       403       403         403        200   403
/api/annotation/images/{image}/file/        GET     403       404       200         200        200   403
/api/annotation/cells/{cell}/file/          GET     403       200       200         200        200   403
/api/annotation/images/{image}/history/     GET     403       403       200         200        200   403
/api/annotation/images/{image}/reopen/      POST    403       403       400         403        400   403
/api/annotation/queue/next/                 POST    403       200       403         403        403   403
/api/annotation/queue/skip/                 POST    403       400       403         403        403   403
/api/annotation/queue/progress/             GET     403       200       403         403        403   403
/api/annotation/labels/                     GET     403       200       403         403        403   403
/api/annotation/labels/                     POST    403       400       403         403        403   403
/api/annotation/labels/undo/                POST    403       404       403         403        403   403
/api/annotation/labels/flag/                POST    403       404       403         403        403   403
/api/annotation/consensus/                  GET     403       403       200         403        200   403
/api/annotation/consensus/{image}/resolve/  POST    403       403       400         403        400   403
/api/annotation/agreement/                  GET     403       403       200         200        200   403
/api/annotation/agreement/heatmap.png       GET     403       403       200         200        200   403
/training/                                  GET     login     403       403         200        200   403
/training/start/                            POST    login     403       403         403        302   403
/training/runs/999999/                      GET     login     403       403         404        404   403
/training/runs/999999/cancel/               POST    login     403       403         403        404   403
/training/models/999999/                    GET     login     403       403         404        404   403
/training/models/999999/activate/           POST    login     403       403         403        404   403
/training/models/999999/plots/roc_ensemble.png GET  login     403       403         404        404   403
/api/training/runs/                         GET     403       403       403         200        200   403
/api/training/runs/                         POST    403       403       403         403        400   403
/api/training/weights/                      GET     403       403       403         200        200   403
/api/training/runs/999999/                  GET     403       403       403         404        404   403
/api/training/runs/999999/cancel/           POST    403       403       403         403        404   403
/api/training/models/                       GET     403       403       403         200        200   403
/api/training/models/999999/                GET     403       403       403         404        404   403
/api/training/models/999999/activate/       POST    403       403       403         403        404   403
/api/inference/predict/                     POST    403       403       403         400        400   403
/api/inference/predict/                     POST:image 403    403       403         409        409   403
/api/inference/images/{image}/opinion/      GET     403       403       200         200        200   403
/api/inference/images/{image}/similar/      GET     403       403       200         200        200   403
/api/inference/images/{image}/gradcam.png   GET     403       403       409         409        409   403
/api/inference/scoring/jobs/                 GET     403       403       403         403        200   403
/api/inference/scoring/jobs/                 POST    403       403       403         403        409   403
/api/inference/scoring/jobs/999999/          GET     403       403       403         403        404   403
/api/inference/scoring/jobs/{job}/          GET     403       403       403         403        200   403
/releases/                                  GET     login     403       403         200        200   403
/releases/new/                              GET     login     403       403         200        200   403
/releases/new/                              POST    login     403       403         200        200   403
/releases/new/                              POST:title login    403       403         302        302   403
/releases/diff/                             GET     login     403       403         200        200   403
/releases/v999999/                          GET     login     403       403         404        404   403
/releases/v999999/archive/                  POST    login     403       403         404        404   403
/releases/v999999/download/                 GET     login     403       403         404        404   403
/releases/v{version}/                       GET     login     403       403         200        200   403
/releases/v{version}/archive/               POST    login     403       403         302        302   403
/releases/v{version}/download/              GET     login     403       403         200        200   403
/api/releases/versions/                     GET     403       403       403         200        200   403
/api/releases/versions/                     POST    403       403       403         201        201   403
/api/releases/versions/999999/              GET     403       403       403         404        404   403
/api/releases/versions/999999/manifest/     GET     403       403       403         404        404   403
/api/releases/versions/999999/archive/      GET     403       403       403         404        404   403
/api/releases/versions/999999/archive/      POST    403       403       403         404        404   403
/api/releases/versions/999999/archive/download/ GET 403       403       403         404        404   403
/api/releases/versions/999999/diff/999998/  GET     403       403       403         404        404   403
/api/releases/versions/{version}/           GET     403       403       403         200        200   403
/api/releases/versions/{version}/manifest/  GET     403       403       403         200        200   403
/api/releases/versions/{version}/archive/   GET     403       403       403         200        200   403
/api/releases/versions/{version}/archive/   POST    403       403       403         202        202   403
/api/releases/versions/{version}/archive/download/ GET 403    403       403         200        200   403
/api/releases/versions/{version}/diff/{version}/ GET 403      403       403         200        200   403
/inference/scoring/                         GET     login     403       403         403        200   403
/inference/scoring/rescore/                 POST    login     403       403         403        302   403
/inference/scoring/jobs/999999/progress/    GET     login     403       403         403        404   403
/inference/scoring/jobs/{job}/progress/     GET     login     403       403         403        200   403
/inference/scoring/refresh/                 POST    login     403       403         403        302   403
/inference/scoring/index/999999/progress/   GET     login     403       403         403        404   403
/inference/scoring/refreshes/999999/progress/ GET   login     403       403         403        404   403
/inference/review/                          GET     login     403       200         200        200   403
/inference/settings/                        GET     login     403       403         403        200   403
/inference/settings/                        POST    login     403       403         403        200   403
/inference/settings/                        POST:al-change login 403    403         403        302   403
/inference/settings/                        POST:al-apply login 403     403         403        302   403
/inference/settings/apply/                  POST    login     403       403         403        302   403
/cases/                                     GET     login     403       200         200        200   403
/cases/{case}/                              GET     login     403       200         200        200   403
/cases/{case}/summary.json                  GET     login     403       200         200        200   403
/cases/999999/                              GET     login     403       404         404        404   403
/admin/inference/activelearningsettings/    GET     login     302       302         302        302   302
/labscreen/                                 GET     login     403       403         200        200   403
/labscreen/imports/                         POST    login     403       403         403        302   403
/labscreen/imports/999999/                  GET     login     403       403         403        404   403
/labscreen/studies/                         POST    login     403       403         302        302   403
/labscreen/studies/999999/                  GET     login     403       403         404        404   403
/labscreen/studies/999999/cancel/           POST    login     403       403         404        404   403
/labscreen/studies/999999/activate/         POST    login     403       403         403        404   403
/labscreen/studies/999999/files/summary     GET     login     403       403         404        404   403
/api/labscreen/studies/999999/              GET     403       403       403         404        404   403
/admin/labscreen/outcomerule/               GET     login     302       302         302        200   302
/api/schema/                                GET     403       200       200         200        200   200
/api/docs/                                  GET     403       200       200         200        200   200
"""

# Reachable without logging in, by design. Static files are served by WhiteNoise, outside the URLconf.
PUBLIC_ROUTES = {"accounts/login/", "healthz", "readyz"}  # readyz: tests/core/test_health.py
# The Django admin checks is_staff itself on every one of its views; the table samples it above.
DELEGATED_NAMESPACES = {"admin"}


# The active-learning form as the settings page posts it.
AL_FORM = {
    "cold_start": "typical",
    "strategy": "margin",
    "exploration": "0",
    "max_class_share": "1",
    "top_n": "2",
    "review_min_confidence": "0.9",
}
BODIES = {
    "title": lambda: {"title": "x"},
    "al-change": lambda: {**AL_FORM, "strategy": "random"},
    "al-apply": lambda: {**AL_FORM, "apply": "1"},
    "image": lambda: {"images": [SimpleUploadedFile("a.png", cell_png(variant=next_variant()), "image/png")]},
}


@dataclass(frozen=True)
class Row:
    url: str
    method: str
    body: str | None
    expected: dict[str, str]

    def concrete_url(self, **ids: int | str) -> str:
        """The url with {image}, {batch}... filled from image_id=, batch_id=...; a placeholder not given is 0."""
        return self.url.format_map(defaultdict(int, {name.removesuffix("_id"): value for name, value in ids.items()}))

    def send(self, client: Client | APIClient, **ids: int | str):
        url = self.concrete_url(**ids)
        if self.body is None:
            return client.generic(self.method, url)
        return client.post(url, BODIES[self.body]())

    def refused(self, role: str) -> bool:
        return self.expected[role] in ("login", "403")


def _parse(table: str) -> list[Row]:
    header, *lines = [line.split() for line in table.strip().splitlines() if line.strip()]
    assert header[2:] == list(ROLES), header
    rows = []
    for url, method, *cells in lines:
        method, _, body = method.partition(":")
        assert not body or body in BODIES, body
        rows.append(Row(url=url, method=method, body=body or None, expected=dict(zip(ROLES, cells, strict=True))))
    return rows


ROWS = _parse(TABLE)


@pytest.fixture
def objects(admin_user, media, django_capture_on_commit_callbacks):
    """The ids the table's placeholders name: an image still needing labels and a final one, both in a case, and
    a version cut from the final one, its archive built and a scoring job of a model trained on it."""
    batch = batch_make(created_by=admin_user)
    case = Case.objects.create(code="matrix-case")
    image = image_make(batch=batch, case=case, reference_label="myeloblast")
    image_make(batch=batch, case=case, final_label="neutrophil")
    version = DatasetVersionFactory(created_by=admin_user)
    with django_capture_on_commit_callbacks(execute=True):  # the build task runs (Celery is eager)
        archive_build_start(version=version, requested_by=admin_user)
    job = ScoringJob.objects.create(
        model_version=ModelVersionFactory(run__dataset_version=version, run__requested_by=admin_user)
    )
    ids = {"image_id": image.id, "cell_id": image.public_id, "batch_id": batch.id, "case_id": case.id}
    return ids | {"version_id": version.number, "job_id": job.id}


def _state() -> dict:
    """What a refused request must leave as it was."""
    return {
        model.__name__: model.objects.count()
        for model in (ImportBatch, CellImage, Annotation, DatasetVersion, TrainingRun, ModelVersion, ScoringJob)
    } | {
        "archives": list(DatasetArchive.objects.order_by("pk").values_list("status", flat=True)),
        "active models": list(ModelVersion.objects.filter(status="active").values_list("pk", flat=True)),
        "al settings": list(ActiveLearningSettings.objects.values()),
        "prioritised": CellImage.objects.filter(priority__gt=0).count(),
    }


def _client(role: str, *, api: bool, make_user, api_client_for, client_for) -> Client | APIClient:
    if role == "anonymous":
        return APIClient() if api else Client()
    user = make_user(None if role == "norole" else Role(role))
    return api_client_for(user) if api else client_for(user)


def _label(row: Row) -> str:
    return f"{row.method}{':' + row.body if row.body else ''} {row.url}"


def _check(row: Row, role: str, client: Client | APIClient, objects: dict[str, int | str]) -> None:
    before = _state() if row.refused(role) else None
    response = row.send(client, **objects)
    expected = row.expected[role]
    where = f"{_label(row)} as {role}"
    if expected == "login":
        assert response.status_code == 302, where
        assert response["Location"].startswith(reverse(settings.LOGIN_URL) + "?next="), response["Location"]
    else:
        assert response.status_code == int(expected), f"{where}: {response.status_code}"
    if before is not None:
        assert not getattr(response, "streaming", False), f"{where}: no file byte may reach a refused caller"
        assert _state() == before, f"{where}: a refused request changed something"


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("row", ROWS, ids=_label)
def test_permission(row, role, objects, make_user, api_client_for, client_for):
    api = row.url.startswith("/api/")
    client = _client(role, api=api, make_user=make_user, api_client_for=api_client_for, client_for=client_for)
    _check(row, role, client, objects)


@pytest.mark.django_db
@pytest.mark.parametrize("role", [r for r in ROLES if r != "anonymous"])
def test_api_answers_the_same_with_a_browser_session(role, objects, make_user, client_for):
    """The pages' JavaScript calls the API with the session cookie, not a token: same rules."""
    client = client_for(make_user(None if role == "norole" else Role(role)))
    for row in ROWS:
        if row.url.startswith("/api/") and row.url != "/api/accounts/token/" and row.body is None:
            _check(row, role, client, objects)


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/accounts/login/", "/healthz"])
def test_public_urls_need_no_login(url):
    assert Client().get(url).status_code == 200


def _walk(patterns, prefix: str = ""):
    """(route, namespace) of every endpoint in the URLconf, routes joined the way ResolverMatch.route joins them."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^")
        if isinstance(pattern, URLResolver):
            if pattern.namespace in DELEGATED_NAMESPACES:
                continue
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


def test_every_url_pattern_has_a_permission_row_or_is_public():
    covered = {resolve(row.concrete_url(image_id=1, batch_id=1, version_id=1, job_id=1)).route for row in ROWS}
    missing = sorted(route for route in _walk(get_resolver().url_patterns) if route not in covered | PUBLIC_ROUTES)
    assert missing == [], f"Add a row to TABLE in {__name__} for: {missing}"


def test_every_protected_row_refuses_anonymous_users():
    for row in ROWS:
        if row.url != "/api/accounts/token/":  # the credentials in the request are the check
            assert row.expected["anonymous"] in ("login", "401", "403"), row

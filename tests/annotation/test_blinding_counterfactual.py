"""The counterfactual blinding test: two worlds that differ only in what is hidden from an annotator (the
colleague's label, the reference label, the analyzer's class) get the same scripted annotator session, and
every answer the annotator sees (status, body, headers) must be the same in both.

The worlds are built one after the other in the same test database: each inside a savepoint that is rolled
back afterwards, with every sequence put back where it was, so both worlds have the same ids. Model
predictions are left out: annotators reach no route that computes them (the permission matrix shows it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from accounts.services import user_create
from annotation.models import Case, CellClass, CellImage
from annotation.services.labeling import annotation_submit, queue_next
from core.roles import Role
from tests.factories.annotation import batch_make
from tests.helpers import cell_png

# What an annotator may not learn, per world: the colleague's label on the cell the annotator labels
# first, and the reference label and analyzer class of every cell.
WORLDS = {
    "colleague agrees": {"colleague": "neutrophil", "reference": "neutrophil", "analyzer": "neutrophil"},
    "colleague differs": {"colleague": "lymphocyte", "reference": "myeloblast", "analyzer": "monocyte"},
}
MINE = "neutrophil"
CELLS = 4
EXPECTED_STATUSES = {
    "label it": 201,
    "undo inside the grace period": 200,
    "label it again": 201,
    "undo after the grace period": 409,
    "flag my label": 204,
    "label a cell I do not hold": 409,
    "label a cell I labeled": 409,
    "label a cell that does not exist": 409,
    "skip it": 204,
    "label page at the end": 200,
}

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
CSRF = re.compile(r'(name="csrfmiddlewaretoken" value=|name="csrf-token" content=)"[^"]+"')
# Headers that vary per request whatever the data (dates, cookies, the length of a normalised body, the random id
# core.logs gives every request).
VOLATILE_HEADERS = {"date", "set-cookie", "expires", "content-length", "last-modified", "x-request-id"}


class _Rollback(Exception):
    """Raised at the end of a world to roll its savepoint back."""


@pytest.fixture
def clock(monkeypatch):
    """clock.advance(seconds): moves django.utils.timezone.now forward for services, models and sessions."""
    real_now = timezone.now

    class Clock:
        offset = timedelta(0)

        def advance(self, seconds: float) -> None:
            self.offset += timedelta(seconds=seconds)

    clock = Clock()
    monkeypatch.setattr(timezone, "now", lambda: real_now() + clock.offset)
    return clock


def _sequences() -> list[tuple[str, int | None]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = current_schema()")
        return cursor.fetchall()


def _sequences_restore(saved: list[tuple[str, int | None]]) -> None:
    # setval is not transactional: a rolled-back world would otherwise leave the next one with other ids.
    with connection.cursor() as cursor:
        for name, last_value in saved:
            if last_value is None:
                cursor.execute("SELECT setval(%s, 1, false)", [name])
            else:
                cursor.execute("SELECT setval(%s, %s, true)", [name, last_value])


@dataclass
class World:
    subject: object
    cells: list[CellImage]
    case: Case


def _world_build(hidden: dict[str, str]) -> World:
    admin, _ = user_create(username="cf_admin", role=Role.ADMIN, password="pw-cf-admin-1234")
    subject, _ = user_create(username="cf_subject", role=Role.ANNOTATOR, password="pw-cf-subject-1234")
    colleague, _ = user_create(username="cf_colleague", role=Role.ANNOTATOR, password="pw-cf-colleague-1234")
    batch = batch_make(created_by=admin)
    case = Case.objects.create(code="CF-001", diagnosis=Case.Diagnosis.AML)
    cells = []
    for index in range(CELLS):
        data = cell_png(variant=9000 + index)
        sha = hashlib.sha256(data).hexdigest()
        name = f"images/{sha[:2]}/{sha}.png"
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(data))
        cells.append(
            CellImage.objects.create(
                sha256=sha,
                file=name,
                format="PNG",
                width=96,
                height=96,
                size_bytes=len(data),
                original_name=f"cf_{index}.png",
                case=case,
                batch=batch,
                reference_label=CellClass.objects.get(code=hidden["reference"]),
                analyzer_class=CellClass.objects.get(code=hidden["analyzer"]),
            )
        )
    # The colleague labels the first cell before the subject starts (so the subject is its second labeler).
    assert queue_next(annotator=colleague).image == cells[0]
    annotation_submit(
        image_id=cells[0].id, annotator=colleague, cell_class=CellClass.objects.get(code=hidden["colleague"])
    )
    return World(subject=subject, cells=cells, case=case)


def _normalise(text: str) -> str:
    return CSRF.sub(r'\1"<csrf>"', TIMESTAMP.sub("<time>", text))


def _seen(response) -> dict:
    """What the annotator sees of one response, with timestamps, lease expiry and CSRF tokens normalised."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    content_type = response.get("Content-Type", "")
    if content_type.startswith(("application/json", "text/", "application/vnd.oai")):
        shown = _normalise(body.decode())
    else:
        shown = hashlib.sha256(body).hexdigest()  # image bytes
    headers = {k.lower(): _normalise(v) for k, v in response.items() if k.lower() not in VOLATILE_HEADERS}
    return {"status": response.status_code, "headers": headers, "body": shown}


def _session(world: World, clock, settings) -> list[tuple[str, dict]]:
    """The scripted annotator: every step's name and what it showed."""
    client = Client()
    client.force_login(world.subject)
    first, second, third, fourth = world.cells
    seen: list[tuple[str, dict]] = []

    def call(name: str, method: str, path: str, body: dict | None = None) -> dict:
        if method == "GET":
            response = client.get(path)
        else:
            response = client.post(path, data=json.dumps(body or {}), content_type="application/json")
        result = _seen(response)
        seen.append((name, result))
        return result

    def json_of(result: dict) -> dict:
        return json.loads(result["body"]) if result["body"] else {}

    call("label page", "GET", "/annotation/label/")
    call("home", "GET", "/")
    call("progress", "GET", "/api/annotation/queue/progress/")
    call("my labels", "GET", "/api/annotation/labels/")
    assert json_of(call("next: the cell the colleague labeled", "POST", "/api/annotation/queue/next/"))["image"] == (
        first.id
    )
    call("label it", "POST", "/api/annotation/labels/", {"image": first.id, "cell_class": MINE})
    call("next: another cell", "POST", "/api/annotation/queue/next/")
    call("progress after a label", "GET", "/api/annotation/queue/progress/")
    clock.advance(10)
    call("undo inside the grace period", "POST", "/api/annotation/labels/undo/")
    call("my labels after undo", "GET", "/api/annotation/labels/")
    call("progress after undo", "GET", "/api/annotation/queue/progress/")
    call("label it again", "POST", "/api/annotation/labels/", {"image": first.id, "cell_class": MINE})
    call("next after the new label", "POST", "/api/annotation/queue/next/")
    clock.advance(settings.HEMALOOP_UNDO_GRACE_SECONDS + 1)
    call("undo after the grace period", "POST", "/api/annotation/labels/undo/")
    call("flag my label", "POST", "/api/annotation/labels/flag/", {"note": "I pressed the wrong key"})
    call("flag it twice", "POST", "/api/annotation/labels/flag/", {})
    call("label a cell I do not hold", "POST", "/api/annotation/labels/", {"image": fourth.id, "cell_class": MINE})
    call("label a cell I labeled", "POST", "/api/annotation/labels/", {"image": first.id, "cell_class": MINE})
    call("label a cell that does not exist", "POST", "/api/annotation/labels/", {"image": 10**8, "cell_class": MINE})
    held = json_of(call("next: resume the held cell", "POST", "/api/annotation/queue/next/"))
    call("skip it", "POST", "/api/annotation/queue/skip/", {"image": held["image"]})
    call("next after skip", "POST", "/api/annotation/queue/next/")
    call("progress at the end", "GET", "/api/annotation/queue/progress/")
    call("my labels at the end", "GET", "/api/annotation/labels/")
    call("taxonomy", "GET", "/api/annotation/taxonomy/")
    call("me", "GET", "/api/accounts/me/")
    call("token page", "GET", "/accounts/token/")
    call("schema", "GET", "/api/schema/")
    for cell in (first, second, third):
        call(f"image file {cell.id}", "GET", f"/api/annotation/images/{cell.id}/file/")
        call(f"image page file {cell.id}", "GET", f"/annotation/images/{cell.id}/file")
        # Routes an annotator may not open must refuse the same way in both worlds.
        for path in (
            f"/annotation/images/{cell.id}/",
            f"/api/annotation/images/{cell.id}/",
            f"/api/annotation/images/{cell.id}/history/",
            f"/api/inference/images/{cell.id}/opinion/",
        ):
            call(f"refused {path}", "GET", path)
    for path in (
        "/annotation/consensus/",
        "/api/annotation/consensus/",
        "/api/annotation/agreement/",
        "/annotation/agreement/",
        "/cases/",
        f"/cases/{world.case.id}/",
        f"/cases/{world.case.id}/summary.json",
        "/inference/review/",
    ):
        call(f"refused {path}", "GET", path)
    call("label page at the end", "GET", "/annotation/label/")
    return seen


def test_an_annotator_sees_the_same_whatever_colleagues_the_reference_and_the_analyzer_said(
    db, settings, clock, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    saved = _sequences()
    sessions = {}
    for name, hidden in WORLDS.items():
        try:
            with transaction.atomic():
                world = _world_build(hidden)
                sessions[name] = _session(world, clock, settings)
                raise _Rollback
        except _Rollback:
            pass
        _sequences_restore(saved)

    agrees, differs = sessions.values()
    statuses = {step: seen["status"] for step, seen in agrees}
    # The session really labels, undoes, is refused and flags (equal answers would prove nothing otherwise).
    assert {step: statuses[step] for step in EXPECTED_STATUSES} == EXPECTED_STATUSES
    assert [step for step, _ in agrees] == [step for step, _ in differs]
    for (step, seen_agrees), (_, seen_differs) in zip(agrees, differs, strict=True):
        assert seen_agrees == seen_differs, f"{step!r} tells the annotator what is hidden"

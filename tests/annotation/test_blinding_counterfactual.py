"""The counterfactual blinding test: two worlds that differ only in what is hidden from an annotator (the
colleague's label, the reference label, the analyzer's class, and metadata naming the class in the files: EXIF,
JPEG comments, PNG text) get the same scripted annotator session, and every answer the annotator sees (status,
body, headers, image bytes) must be the same in both.

The worlds are built one after the other in the same test database: each inside a savepoint that is rolled
back afterwards, with every sequence put back where it was, so both worlds have the same database ids. The cells'
public ids are random, so they differ between the worlds: each world's public ids are replaced by the order in
which the session first saw them (an order that followed something hidden would still show). Model predictions
are left out: annotators reach no route that computes them (the permission matrix shows it).
"""

from __future__ import annotations

import hashlib
import io
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
from PIL import Image, PngImagePlugin

from accounts.services import user_create
from annotation.models import Case, CellClass, CellImage
from annotation.services.labeling import annotation_submit, queue_next
from core.roles import Role
from tests.factories.annotation import batch_make
from tests.helpers import cell_png

# What an annotator may not learn, per world: the colleague's label on the cell the annotator labels
# first, the reference label and analyzer class of every cell, and whether the files name the class.
WORLDS = {
    "colleague agrees": {"colleague": "neutrophil", "reference": "neutrophil", "analyzer": "neutrophil"},
    "colleague differs": {
        "colleague": "lymphocyte",
        "reference": "myeloblast",
        "analyzer": "monocyte",
        "file metadata": "monocyte",
    },
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
    "label a cell by its database id": 409,
    "skip it": 204,
    "label page at the end": 200,
}

# Per-cell routes an annotator must be refused on: by database id (as an unknown id), by hash, or by role.
REFUSED_CELL_ROUTES = (
    "/api/annotation/images/{id}/file/",
    "/annotation/images/{id}/file",
    "/annotation/images/{id}/thumb",
    "/api/annotation/cells/{id}/file/",
    "/api/annotation/cells/{sha256}/file/",
    "/annotation/images/{id}/",
    "/api/annotation/images/{id}/",
    "/api/annotation/images/{id}/history/",
    "/api/inference/images/{id}/opinion/",
)
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


def _cell_file(index: int, *, metadata: str | None) -> tuple[bytes, str]:
    """(bytes, PIL format) of cell `index`: PNGs and JPEGs alike, whose pixels are the same in both worlds and which
    carry, when `metadata` is given, the class in every place an analyzer writes one."""
    with Image.open(io.BytesIO(cell_png(variant=9000 + index))) as image:
        pixels = image.convert("RGB")
    out = io.BytesIO()
    if index % 2 == 0:
        info = PngImagePlugin.PngInfo()
        exif = Image.Exif()
        if metadata:
            info.add_text("Comment", f"analyzer class: {metadata}")
            info.add_itxt("Description", f"pre-class {metadata}")
            exif[0x010E] = f"analyzer class: {metadata}"  # ImageDescription
        pixels.save(out, format="PNG", pnginfo=info, exif=exif.tobytes() if metadata else b"")
        return out.getvalue(), "PNG"
    extra = {}
    if metadata:
        exif = Image.Exif()
        exif[0x010E] = f"analyzer class: {metadata}"
        extra = {"exif": exif.tobytes(), "comment": f"pre-class {metadata}".encode()}
    pixels.save(out, format="JPEG", quality=90, **extra)
    return out.getvalue(), "JPEG"


def _world_build(hidden: dict[str, str]) -> World:
    admin, _ = user_create(username="cf_admin", role=Role.ADMIN, password="pw-cf-admin-1234")
    subject, _ = user_create(username="cf_subject", role=Role.ANNOTATOR, password="pw-cf-subject-1234")
    colleague, _ = user_create(username="cf_colleague", role=Role.ANNOTATOR, password="pw-cf-colleague-1234")
    batch = batch_make(created_by=admin)
    case = Case.objects.create(code="CF-001", diagnosis=Case.Diagnosis.AML)
    cells = []
    for index in range(CELLS):
        data, image_format = _cell_file(index, metadata=hidden.get("file metadata"))
        if "file metadata" in hidden:  # the files really do name the class in this world
            assert hidden["file metadata"].encode() in data
        sha = hashlib.sha256(data).hexdigest()
        name = f"images/{sha[:2]}/{sha}.{'png' if image_format == 'PNG' else 'jpg'}"
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(data))
        cells.append(
            CellImage.objects.create(
                sha256=sha,
                file=name,
                format=image_format,
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


class PublicIds:
    """Replaces a world's public ids by the order the session first saw them in: <cell 1>, <cell 2>, ..."""

    def __init__(self, cells: list[CellImage]) -> None:
        self.pattern = re.compile("|".join(re.escape(cell.public_id) for cell in cells))
        self.seen: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return self.pattern.sub(lambda match: self.seen.setdefault(match[0], f"<cell {len(self.seen) + 1}>"), text)


def _seen(response, public_ids: PublicIds) -> dict:
    """What the annotator sees of one response, with timestamps, lease expiry, CSRF tokens and public ids
    normalised."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    content_type = response.get("Content-Type", "")
    if content_type.startswith(("application/json", "text/", "application/vnd.oai")):
        shown = public_ids(_normalise(body.decode()))
    else:
        shown = hashlib.sha256(body).hexdigest()  # image bytes
    headers = {k.lower(): public_ids(_normalise(v)) for k, v in response.items() if k.lower() not in VOLATILE_HEADERS}
    return {"status": response.status_code, "headers": headers, "body": shown}


def _session(world: World, clock, settings) -> list[tuple[str, dict]]:
    """The scripted annotator: every step's name and what it showed."""
    client = Client()
    client.force_login(world.subject)
    first, second, third, fourth = world.cells
    public_ids = PublicIds(world.cells)
    seen: list[tuple[str, dict]] = []

    def call(name: str, method: str, path: str, body: dict | None = None) -> dict:
        if method == "GET":
            response = client.get(path)
        else:
            response = client.post(path, data=json.dumps(body or {}), content_type="application/json")
        result = _seen(response, public_ids)
        seen.append((name, result))
        return result

    def json_of(result: dict) -> dict:
        return json.loads(result["body"]) if result["body"] else {}

    call("label page", "GET", "/annotation/label/")
    call("home", "GET", "/")
    call("progress", "GET", "/api/annotation/queue/progress/")
    call("my labels", "GET", "/api/annotation/labels/")
    # The subject's first cell is the one the colleague labeled (queue order): the first public id it sees.
    assert json_of(call("next: the cell the colleague labeled", "POST", "/api/annotation/queue/next/"))["image"] == (
        "<cell 1>"
    )
    assert public_ids.seen == {first.public_id: "<cell 1>"}
    call("label it", "POST", "/api/annotation/labels/", {"image": first.public_id, "cell_class": MINE})
    call("next: another cell", "POST", "/api/annotation/queue/next/")
    call("progress after a label", "GET", "/api/annotation/queue/progress/")
    clock.advance(10)
    call("undo inside the grace period", "POST", "/api/annotation/labels/undo/")
    call("my labels after undo", "GET", "/api/annotation/labels/")
    call("progress after undo", "GET", "/api/annotation/queue/progress/")
    call("label it again", "POST", "/api/annotation/labels/", {"image": first.public_id, "cell_class": MINE})
    call("next after the new label", "POST", "/api/annotation/queue/next/")
    clock.advance(settings.HEMALOOP_UNDO_GRACE_SECONDS + 1)
    call("undo after the grace period", "POST", "/api/annotation/labels/undo/")
    call("flag my label", "POST", "/api/annotation/labels/flag/", {"note": "I pressed the wrong key"})
    call("flag it twice", "POST", "/api/annotation/labels/flag/", {"image": first.public_id})
    call("flag a label by the cell's database id", "POST", "/api/annotation/labels/flag/", {"image": first.id})
    call(
        "label a cell I do not hold", "POST", "/api/annotation/labels/", {"image": fourth.public_id, "cell_class": MINE}
    )
    call("label a cell I labeled", "POST", "/api/annotation/labels/", {"image": first.public_id, "cell_class": MINE})
    call("label a cell that does not exist", "POST", "/api/annotation/labels/", {"image": "nope", "cell_class": MINE})
    call("label a cell by its database id", "POST", "/api/annotation/labels/", {"image": fourth.id, "cell_class": MINE})
    held = json_of(call("next: resume the held cell", "POST", "/api/annotation/queue/next/"))
    held_id = next(public for public, shown in public_ids.seen.items() if shown == held["image"])
    call("skip by database id", "POST", "/api/annotation/queue/skip/", {"image": second.id})
    call("skip an unknown cell", "POST", "/api/annotation/queue/skip/", {"image": "nope"})
    call("skip it", "POST", "/api/annotation/queue/skip/", {"image": held_id})
    call("next after skip", "POST", "/api/annotation/queue/next/")
    call("progress at the end", "GET", "/api/annotation/queue/progress/")
    call("my labels at the end", "GET", "/api/annotation/labels/")
    call("taxonomy", "GET", "/api/annotation/taxonomy/")
    call("me", "GET", "/api/accounts/me/")
    call("token page", "GET", "/accounts/token/")
    call("schema", "GET", "/api/schema/")
    for index, cell in enumerate(world.cells):
        call(f"image file of cell {index}", "GET", f"/api/annotation/cells/{cell.public_id}/file/")
        # Routes an annotator may not open must refuse the same way in both worlds; by database id, as an
        # unknown id.
        for route in REFUSED_CELL_ROUTES:
            call(f"refused {route} of cell {index}", "GET", route.format(id=cell.id, sha256=cell.sha256))
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
    steps = dict(agrees)
    # A database id or a hash names no cell: refused exactly as an id that does not exist.
    assert steps["label a cell by its database id"] == steps["label a cell that does not exist"]
    assert steps["skip by database id"] == steps["skip an unknown cell"]
    assert steps["skip by database id"]["status"] == 404
    assert steps["flag a label by the cell's database id"]["status"] == 404
    for index in range(CELLS):
        assert steps[f"image file of cell {index}"]["status"] == 200
        refused = {route: steps[f"refused {route} of cell {index}"] for route in REFUSED_CELL_ROUTES}
        assert refused["/api/annotation/cells/{id}/file/"] == refused["/api/annotation/cells/{sha256}/file/"]
        for route in REFUSED_CELL_ROUTES[:5]:
            assert refused[route]["status"] == 404, route
    # The session really labels, undoes, is refused and flags (equal answers would prove nothing otherwise).
    assert {step: statuses[step] for step in EXPECTED_STATUSES} == EXPECTED_STATUSES
    assert [step for step, _ in agrees] == [step for step, _ in differs]
    for (step, seen_agrees), (_, seen_differs) in zip(agrees, differs, strict=True):
        assert seen_agrees == seen_differs, f"{step!r} tells the annotator what is hidden"

"""Annotators know a cell only by its random public id: the ids they are handed say nothing about the database ids
or the import order, nothing they receive is ordered by database id, and a database id is an unknown id to them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import resolve
from django.utils import timezone

from annotation.models import Annotation, CellImage
from core.roles import Role
from tests.factories.annotation import batch_make, image_make

CELLS = 40
PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{22}")
TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT[\d:.]+Z")


@pytest.fixture
def cells(admin_user) -> list[CellImage]:
    batch = batch_make(created_by=admin_user)
    return [image_make(batch=batch) for _ in range(CELLS)]


def _monotonic(values: list) -> bool:
    return values == sorted(values) or values == sorted(values, reverse=True)


def test_the_public_ids_an_annotator_is_handed_do_not_follow_the_database_ids(cells, make_user, api_client_for):
    client = api_client_for(make_user(Role.ANNOTATOR))
    handed = []
    while (item := client.post("/api/annotation/queue/next/")).status_code == 200:
        handed.append(item.json()["image"])
        assert resolve(item.json()["image_url"]).kwargs == {"public_id": item.json()["image"]}
        labeled = client.post("/api/annotation/labels/", {"image": handed[-1], "cell_class": "monocyte"}, format="json")
        assert labeled.status_code == 201
    by_public_id = {cell.public_id: cell for cell in cells}
    assert sorted(handed) == sorted(by_public_id)  # every cell, each once
    assert all(PUBLIC_ID.fullmatch(public_id) for public_id in handed)
    database_ids = [by_public_id[public_id].id for public_id in handed]
    # Equal priorities: the queue hands cells out oldest first, yet the ids it shows are in no order at all
    # (a random order of 40 ids is monotonic with probability 2/40!).
    assert database_ids == sorted(database_ids)
    assert not _monotonic(handed)
    assert not any(public_id in cell.sha256 for public_id, cell in by_public_id.items())


def test_my_labels_come_newest_first_by_label_time_not_by_database_id(cells, make_user, api_client_for):
    annotator = make_user(Role.ANNOTATOR)
    client = api_client_for(annotator)
    for _ in range(3):
        item = client.post("/api/annotation/queue/next/").json()
        client.post("/api/annotation/labels/", {"image": item["image"], "cell_class": "monocyte"}, format="json")
    labels = list(Annotation.objects.filter(annotator=annotator).order_by("id"))
    # The label with the highest id was given first, the one with the lowest last.
    now = timezone.now()
    for minutes_ago, label in zip((1, 2, 3), labels, strict=True):
        Annotation.objects.filter(pk=label.pk).update(created_at=now - timedelta(minutes=minutes_ago))
    rows = client.get("/api/annotation/labels/").json()["results"]
    assert [row["image"] for row in rows] == [label.image.public_id for label in labels]
    assert all(set(row) == {"image", "cell_class", "created_at", "duration_ms", "undone"} for row in rows)


def test_a_database_id_is_refused_exactly_like_an_unknown_id_on_every_annotator_route(cells, make_user, api_client_for):
    client = api_client_for(make_user(Role.ANNOTATOR))
    held = client.post("/api/annotation/queue/next/").json()
    cell = CellImage.objects.get(public_id=held["image"])

    def answers(value) -> list[tuple[int, bytes]]:
        requests = [
            client.post("/api/annotation/labels/", {"image": value, "cell_class": "monocyte"}, format="json"),
            client.post("/api/annotation/queue/skip/", {"image": value}, format="json"),
            client.post("/api/annotation/labels/flag/", {"image": value}, format="json"),
            client.get(f"/api/annotation/cells/{value}/file/"),
            client.get(f"/api/annotation/images/{value}/file/"),
        ]
        # The refused label hands back the held cell, its lease renewed: the expiry is the one thing that may differ.
        return [(response.status_code, TIMESTAMP.sub(b"<time>", response.content)) for response in requests]

    # The held cell's own database id, as a number and as text, and its hash: each is no cell at all.
    unknown = answers("no-such-cell")
    assert [status for status, _ in unknown] == [409, 404, 404, 404, 404]
    for value in (cell.id, str(cell.id), cell.sha256):
        assert answers(value)[:4] == unknown[:4], value
    assert answers(cell.id)[4] == answers(10**8)[4]
    # Nothing was labeled or skipped by those requests: the cell is still held, and labels by its public id.
    assert client.post("/api/annotation/queue/next/").json()["image"] == held["image"]
    done = client.post("/api/annotation/labels/", {"image": held["image"], "cell_class": "monocyte"}, format="json")
    assert done.status_code == 201

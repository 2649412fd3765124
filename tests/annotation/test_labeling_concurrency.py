"""Many annotators at once on PostgreSQL, labeling and undoing (some undo twice at once): every image ends
with exactly two live labels from two people."""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
import zlib
from collections import Counter

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from annotation.models import Annotation, CellClass, CellImage, ImportBatch, LabelStatus
from annotation.services.labeling import LabelingError, annotation_submit, annotation_undo, queue_next, queue_skip
from core.roles import Role

POOL = 500
SERVICE_CLIENTS = 14
HTTP_CLIENTS = 6


def _make_pool(admin) -> None:
    batch = ImportBatch.objects.create(requested_by=admin, source_name="pool", source_path="-")
    CellImage.objects.bulk_create(
        CellImage(
            sha256=f"{i:064x}",
            file=f"images/{i}.png",
            format="PNG",
            width=8,
            height=8,
            size_bytes=1,
            original_name=f"{i}.png",
            batch=batch,
        )
        for i in range(POOL)
    )


def _usual_code(public_id: str, codes) -> str:
    """The class most annotators give this cell (so that many cells end in agreement), from its public id."""
    return codes[zlib.crc32(public_id.encode()) % len(codes)]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.accepted = 0
        self.undone = 0
        self.errors: list[str] = []

    def add(self, status: int, accepted: bool = False, undone: bool = False) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.accepted += accepted
            self.undone += undone


def _service_client(user, codes, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    classes = {c.code: c for c in CellClass.objects.all()}
    try:
        while True:
            item = queue_next(annotator=user)
            if item is None:
                return
            if rng.random() < 0.03:
                queue_skip(image_id=item.image.id, annotator=user)
                continue
            code = _usual_code(item.image.public_id, codes) if rng.random() < 0.8 else rng.choice(codes)
            try:
                annotation_submit(image_id=item.image.id, annotator=user, cell_class=classes[code])
                tally.add(201, accepted=True)
            except LabelingError:
                tally.add(409)
                continue
            if rng.random() < 0.15:
                # Take it back within the grace period, whatever it decided, and label the cell again.
                again = annotation_undo(annotator=user)
                tally.add(200, undone=True)
                try:
                    annotation_submit(image_id=again.image.id, annotator=user, cell_class=classes[rng.choice(codes)])
                    tally.add(201, accepted=True)
                except LabelingError:  # a colleague's queue call raced for the freed slot and won it
                    tally.add(409)
    except Exception as exc:  # noqa: BLE001 - any crash must fail the test, with its reason
        tally.errors.append(repr(exc))
    finally:
        connection.close()


def _http_client(base: str, token: str, codes, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def call(path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(base + path, data=json.dumps(body or {}).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    try:
        while True:
            status, item = call("/api/annotation/queue/next/")
            tally.add(status)
            if status == 204:
                return
            if status != 200:
                continue
            code = _usual_code(item["image"], codes) if rng.random() < 0.8 else rng.choice(codes)
            status, _ = call("/api/annotation/labels/", {"image": item["image"], "cell_class": code})
            tally.add(status, accepted=status == 201)
            if status == 201 and rng.random() < 0.2:
                # Two undos at once (a double press): only one may take the label back.
                answers: list[tuple[int, dict]] = []

                def press(answers=answers) -> None:
                    answers.append(call("/api/annotation/labels/undo/"))

                presses = [threading.Thread(target=press) for _ in range(2)]
                for press in presses:
                    press.start()
                for press in presses:
                    press.join(timeout=60)
                taken = [body for status, body in answers if status == 200]
                if sorted(status for status, _ in answers) != [200, 404]:
                    tally.errors.append(f"double undo answered {sorted(s for s, _ in answers)}")
                for body in taken:
                    tally.add(200, undone=True)
                    status, _ = call("/api/annotation/labels/", {"image": body["image"], "cell_class": code})
                    tally.add(status, accepted=status == 201)
    except Exception as exc:  # noqa: BLE001
        tally.errors.append(repr(exc))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_concurrent_annotators_label_and_undo_and_the_pool_ends_labeled_exactly_twice(live_server, make_user):
    admin = make_user(Role.ADMIN)
    _make_pool(admin)
    codes = list(CellClass.objects.values_list("code", flat=True))
    service_users = [make_user(Role.ANNOTATOR) for _ in range(SERVICE_CLIENTS)]
    http_users = [make_user(Role.ANNOTATOR) for _ in range(HTTP_CLIENTS)]
    tally = Tally()
    threads = [
        threading.Thread(target=_service_client, args=(user, codes, tally, i)) for i, user in enumerate(service_users)
    ] + [
        threading.Thread(
            target=_http_client, args=(live_server.url, Token.objects.create(user=user).key, codes, tally, 100 + i)
        )
        for i, user in enumerate(http_users)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a client hung"

    assert tally.errors == []
    assert not [s for s in tally.statuses if s >= 500], tally.statuses
    live = Annotation.objects.filter(undone_at__isnull=True)
    assert live.count() == 2 * POOL == tally.accepted - tally.undone, "a label was lost or an extra one slipped in"
    assert tally.undone > 0
    assert Annotation.objects.filter(undone_at__isnull=False).count() == tally.undone
    per_image = Counter(live.values_list("image_id", flat=True))
    assert set(per_image.values()) == {2}
    pairs = live.values_list("image_id", "annotator_id")
    assert len(set(pairs)) == 2 * POOL, "one annotator labeled the same image twice"
    assert not CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS).exists()
    assert set(CellImage.objects.values_list("label_count", flat=True)) == {2}
    # The HTTP clients took part for real.
    assert Annotation.objects.filter(annotator__in=http_users).count() > 0

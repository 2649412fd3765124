"""The platform's queue is the benchmark's selection: after a cold start from the index and after each refresh, the
CellImage priorities follow training.ml.selection.select_next called here on the same inputs (index vectors,
candidates, final labels, cases, settings, seed). The world is built through the real import, labeling, embedding
and refresh services on PostgreSQL, with the real backbone at 32 px."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from django.core.files.storage import default_storage

from annotation.models import CellImage, LabelStatus
from core.roles import Role
from inference.models import ActiveLearningSettings, HeadRefreshJob
from inference.selectors import al_settings_get
from inference.services.index import index_load, index_space_get, index_spec_for
from inference.services.refresh import queue_priorities_refresh
from inference.services.settings import al_settings_update
from tests.inference.pool import folder, import_folder, label_to_final, queue_order
from training.ml.heads import head_from_bytes, head_probabilities
from training.ml.selection import SELECTION_SEED, Projection, round_seed, select_next
from training.selectors import model_version_active

pytestmark = pytest.mark.django_db

CASES = {"case-a": 12, "case-b": 10, "case-c": 8}


def _expected(*, version=None, round_: int) -> tuple[str, list[int]]:
    """select_next on the index as the database holds it now, in the benchmark's terms."""
    ids, matrix = index_load(space=index_space_get(spec=index_spec_for(version)))
    images = {
        row[0]: row[1:] for row in CellImage.objects.values_list("id", "label_status", "final_label__code", "case_id")
    }
    keep = np.array([int(i) in images for i in ids], dtype=bool)
    ids, matrix = ids[keep], matrix[keep]
    rows = [images[int(i)] for i in ids]
    candidate = np.array([status == LabelStatus.NEEDS_LABELS for status, _, _ in rows])
    cases = np.array([case if case is not None else -int(i) - 1 for i, (_, _, case) in zip(ids, rows, strict=True)])
    probabilities, labels = None, []
    if version is not None:
        with default_storage.open(version.out_dir, "rb") as handle:
            head, meta = head_from_bytes(handle.read())
        probabilities = head_probabilities(head, version.temperature, matrix)
        column = {code: i for i, code in enumerate(meta["classes"])}
        labels = [column[code] for status, code, _ in rows if status == LabelStatus.FINAL and code in column]
    chosen = al_settings_get()
    mode, picks = select_next(
        Projection(matrix, seed=SELECTION_SEED),
        candidate=candidate,
        labels=labels,
        count=chosen.top_n,
        probabilities=probabilities,
        cases=cases,
        strategy=chosen.strategy,
        exploration=chosen.exploration,
        seed=round_seed(SELECTION_SEED, round_),
    )
    return mode, [int(i) for i in ids[picks]]


def test_the_cold_start_from_the_index_is_the_pure_typical_selection(
    index_on, admin_user, make_user, tmp_path, django_capture_on_commit_callbacks
):
    index_on.HEMALOOP_HEAD_REFRESH_EVERY = 0  # no head: the cold start alone
    al_settings_update(actor=admin_user, top_n=9)
    with django_capture_on_commit_callbacks(execute=True):
        import_folder(admin_user, folder(tmp_path / "cells", CASES, start=80_000))

    # The import ordered the queue stratified (nothing embedded yet); its embedding pass then ordered it by the index.
    mode, expected = _expected(round_=0)
    assert mode == "typical"
    assert queue_order() == expected
    assert len(expected) == 9
    case_of = dict(CellImage.objects.values_list("id", "case__code"))
    # Spread across cases: every case gives the round some of its cells. (Exactly 3 each is not promised: a k-means
    # group whose cells all come from a case that gave its share still gives its most typical cell.)
    assert set(Counter(case_of[i] for i in expected)) == set(CASES)

    # Labels cover some of the typical cells: Apply now picks others, as the pure function does with them covered.
    annotators = [make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)]
    for image_id in expected[:3]:
        label_to_final(CellImage.objects.get(pk=image_id), "neutrophil", annotators)
    assert queue_priorities_refresh()[0] == "cold start: typical"
    mode, again = _expected(round_=0)
    assert mode == "typical"
    assert queue_order() == again
    assert not set(again) & set(expected[:3])

    # Stratified random stays available.
    al_settings_update(actor=admin_user, cold_start=ActiveLearningSettings.ColdStart.STRATIFIED)
    assert queue_priorities_refresh()[0] == "cold start: stratified"
    assert queue_order() != again


def test_each_refresh_orders_the_queue_as_the_pure_selection_does(
    index_on, admin_user, make_user, client_for, tmp_path, labeled_demo, django_capture_on_commit_callbacks
):
    al_settings_update(actor=admin_user, top_n=12)
    with django_capture_on_commit_callbacks(execute=True):
        unlabeled = import_folder(admin_user, folder(tmp_path / "cells", CASES, start=81_000))
        # 12 trusted labels of each of three classes: the first head, past the typical phase.
        labeled_demo()
    first = model_version_active()
    assert first is not None
    assert first.is_head
    mode, expected = _expected(version=first, round_=1)
    assert mode == "uncertain"
    assert queue_order() == expected
    assert _expected(version=first, round_=2)[1] != expected  # the seed is part of the inputs that must match
    refresh = HeadRefreshJob.objects.get(model_version=first)
    assert refresh.selection == "uncertain"
    assert "(uncertain cells)" in refresh.outcome
    # Apply now with the head active: the same inputs, the same order.
    assert queue_priorities_refresh()[0] == "uncertain"
    assert queue_order() == expected

    # A class with only four final labels: the next head's queue goes back to typical cells.
    annotators = [make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)]
    cells = list(CellImage.objects.filter(batch=unlabeled).order_by("-priority", "id")[:4])
    with django_capture_on_commit_callbacks(execute=True):
        for image in cells:
            label_to_final(image, "monocyte", annotators)
    second = model_version_active()
    assert second.pk != first.pk
    mode, expected = _expected(version=second, round_=2)
    assert mode == "typical"
    assert queue_order() == expected
    assert HeadRefreshJob.objects.get(model_version=second).selection == "typical"

    scoring = client_for(admin_user).get("/inference/scoring/").content.decode()
    assert "uncertainty with diversity" in scoring
    assert "typical cells" in scoring

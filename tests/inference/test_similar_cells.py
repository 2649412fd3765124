"""Similar cells and near-duplicates from the real embedding index (bundled EfficientNet-Lite0 on demo PBC cells, and
copies of them with different bytes): the similar cells with a final class beside a cell, for adjudicators only and
never for someone who may still label it, and leaving out neighbours hidden from the viewer; near-duplicates
reported on the import that brought them and flagged by a dataset version's leakage check across splits."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image

from annotation.models import CellClass, CellImage, ImportItem, LabelStatus, NearDuplicate
from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process
from annotation.services.labeling import annotation_submit
from core.roles import Role
from inference.ensembles import ensemble_cache_clear
from inference.models import EmbeddingShard
from inference.services.index import index_cache_clear
from inference.services.neighbours import SIMILAR_CELLS, similar_cells_cache_clear
from releases.models import ManifestEntry, SplitAssignment
from releases.selectors import version_leakage
from releases.splits import group_key
from tests.factories.annotation import hold
from tests.factories.releases import DatasetVersionFactory
from tests.helpers import DEMO_DIR

pytestmark = pytest.mark.django_db

# Test size: near-duplicates are measured at the index's default 224 px (bench/README.md); 64 px keeps the
# similar-cell tests fast, where only the order of neighbours matters.
FAST_SIZE = 64


@pytest.fixture
def index_on(settings, media):
    settings.HEMALOOP_INDEX_AUTO = True
    settings.HEMALOOP_INDEX_IMAGE_SIZE = FAST_SIZE
    settings.HEMALOOP_INDEX_SHARD_SIZE = 64
    settings.HEMALOOP_HEAD_REFRESH_EVERY = 0  # no head: these tests are about the index alone
    similar_cells_cache_clear()
    yield settings
    similar_cells_cache_clear()
    ensemble_cache_clear()


def _copy(source: Path, target: Path, *, quality: int = 90, scale: float = 0.9) -> None:
    """The same cell with other bytes: rescaled and re-encoded, as a second export of the slide would give it (the
    kind of copy the threshold catches: bench/README.md)."""
    image = Image.open(source).convert("RGB")
    w, h = image.size
    target.parent.mkdir(parents=True, exist_ok=True)
    image.resize((round(w * scale), round(h * scale)), Image.BICUBIC).save(target, "JPEG", quality=quality)


def _import(admin_user, source: Path, *, trusted: bool = False):
    csv_path = source / "cases.csv"
    batch = import_batch_create(
        created_by=admin_user,
        source=source,
        source_name=source.name,
        trusted=trusted,
        csv_path=csv_path if csv_path.exists() else None,
        case_from_folder=not csv_path.exists(),
        enqueue=False,
    )
    return import_batch_process(batch=batch)


def _write_cases(folder: Path, rows: list[tuple[str, str]]) -> None:
    with (folder / "cases.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "case_id", "diagnosis", "analyzer_class", "reference_label"])
        for name, case in rows:
            writer.writerow([name, case, "", "", ""])


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _by_name(name: str) -> CellImage:
    return CellImage.objects.get(original_name__endswith=name)


def _demo_file(image: CellImage) -> Path:
    return next(DEMO_DIR.glob(f"*/{image.original_name}"))


def _demo(cell_class: str, n: int) -> Path:
    return sorted((DEMO_DIR / cell_class).glob("*.jpg"))[n]


@pytest.fixture
def dual(make_user):
    user = make_user(Role.ADJUDICATOR, username="dual")
    user.groups.add(Group.objects.get(name=Role.ANNOTATOR.value))
    return user


def test_similar_cells_for_adjudicators_never_for_who_may_still_label_the_cell(
    index_on, admin_user, adjudicator, annotator, dual, make_user, labeled_demo, tmp_path, settings,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        labeled_demo()  # trusted: 36 final cells of three classes, embedded
    final = CellImage.objects.filter(label_status=LabelStatus.FINAL)
    reference = final.filter(final_label__code="eosinophil").order_by("id").first()
    # Unlabeled: a copy of a final cell (its nearest neighbour by far) and two cells of a class with no final label.
    unlabeled = tmp_path / "unlabeled"
    _copy(_demo_file(reference), unlabeled / "case-u" / "copy.jpg")
    for n in range(2):
        shutil.copyfile(_demo("basophil", n), unlabeled / "case-u" / f"basophil_{n}.jpg")
    with django_capture_on_commit_callbacks(execute=True):
        _import(admin_user, unlabeled)
    query = _by_name("basophil_0.jpg")
    assert query.label_status == LabelStatus.NEEDS_LABELS

    # An adjudicator sees the cell's six most similar cells with a final class, from the page and the API alike.
    api = reverse("inference_api:image_similar", kwargs={"image_id": query.id})
    body = _client(adjudicator).get(api).json()
    assert body["state"] == "ready"
    assert len(body["cells"]) == SIMILAR_CELLS
    ids = [cell["id"] for cell in body["cells"]]
    assert set(ids) <= set(final.values_list("id", flat=True))  # never the unlabeled copy or the other basophil
    similarities = [cell["similarity"] for cell in body["cells"]]
    assert similarities == sorted(similarities, reverse=True)
    assert all(-1 <= s < 1 for s in similarities)
    labels = dict(final.values_list("id", "final_label__code"))
    assert [cell["final_label"]["code"] for cell in body["cells"]] == [labels[i] for i in ids]
    assert body["cells"][0]["thumbnail_url"] == reverse("annotation:image_thumbnail", kwargs={"image_id": ids[0]})
    page = _client(adjudicator).get(reverse("annotation:image_detail", kwargs={"image_id": query.id}))
    assert page.status_code == 200
    assert re.findall(r'data-similar-id="(\d+)"', page.content.decode()) == [str(i) for i in ids]

    # Someone who may still label the cell gets nothing of it: the hidden page, and the API's answer for every
    # hidden cell, word for word (the other unlabeled basophil is hidden from them too).
    other = _by_name("basophil_1.jpg")
    hidden_page = _client(dual).get(reverse("annotation:image_detail", kwargs={"image_id": query.id})).content.decode()
    assert "data-similar" not in hidden_page
    assert not any(f"/annotation/images/{i}/" in hidden_page for i in ids)
    refused = _client(dual).get(api)
    other_refused = _client(dual).get(reverse("inference_api:image_similar", kwargs={"image_id": other.id}))
    assert refused.status_code == other_refused.status_code == 403
    assert refused.content == other_refused.content
    assert _client(annotator).get(api).status_code == 403
    # The consensus page's script asks the API per cell: annotators' pages never name it.
    assert b"data-api-similar" not in _client(annotator).get(reverse("annotation:label")).content

    # A final neighbour the viewer labeled and may still undo is left out for them, not for a colleague.
    copy = _by_name("copy.jpg")
    second = make_user(Role.ANNOTATOR)
    for user in (dual, second):
        hold(image=copy, annotator=user)
        annotation_submit(image_id=copy.id, annotator=user, cell_class=CellClass.objects.get(code="eosinophil"))
    copy.refresh_from_db()
    assert copy.label_status == LabelStatus.FINAL
    reference_api = reverse("inference_api:image_similar", kwargs={"image_id": reference.id})
    assert _client(adjudicator).get(reference_api).json()["cells"][0]["id"] == copy.id
    for_dual = _client(dual).get(reference_api).json()["cells"]
    assert copy.id not in [cell["id"] for cell in for_dual]
    assert len(for_dual) == SIMILAR_CELLS
    settings.HEMALOOP_UNDO_GRACE_SECONDS = 0  # the grace period is over: the cell is final for them too
    assert _client(dual).get(reference_api).json()["cells"][0]["id"] == copy.id


def test_no_index_yet_says_so(index_on, admin_user, adjudicator, labeled_demo, django_capture_on_commit_callbacks):
    index_on.HEMALOOP_INDEX_AUTO = False
    with django_capture_on_commit_callbacks(execute=True):
        labeled_demo()
    image = CellImage.objects.order_by("id").first()
    body = _client(adjudicator).get(reverse("inference_api:image_similar", kwargs={"image_id": image.id})).json()
    assert body == {
        "state": "no_index",
        "message": "No similar cells yet: the embedding index is being built for this cell.",
        "cells": [],
    }
    page = _client(adjudicator).get(reverse("annotation:image_detail", kwargs={"image_id": image.id}))
    assert "No similar cells yet: the embedding index is being built" in page.content.decode()


def test_an_unreadable_index_is_said_on_the_page_not_a_server_error(
    index_on, admin_user, adjudicator, labeled_demo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        labeled_demo()
    # A web process that has not loaded the index yet (this one holds it from the embedding pass).
    similar_cells_cache_clear()
    index_cache_clear()
    shard = EmbeddingShard.objects.order_by("id").first()
    default_storage.delete(shard.file)
    image = CellImage.objects.order_by("id").first()
    page = _client(adjudicator).get(reverse("annotation:image_detail", kwargs={"image_id": image.id}))
    assert page.status_code == 200
    assert 'data-similar-cells data-state="unavailable"' in page.content.decode()
    body = _client(adjudicator).get(reverse("inference_api:image_similar", kwargs={"image_id": image.id})).json()
    assert (body["state"], body["cells"]) == ("unavailable", [])


def test_near_duplicates_are_reported_at_import_and_flagged_across_splits(
    index_on, admin_user, labeled_demo, tmp_path, django_capture_on_commit_callbacks
):
    index_on.HEMALOOP_INDEX_IMAGE_SIZE = 224  # the size the threshold was measured at
    with django_capture_on_commit_callbacks(execute=True):
        first = labeled_demo()
    version = DatasetVersionFactory(created_by=admin_user)
    splits = dict(ManifestEntry.objects.filter(version=version).values_list("sha256", "split"))
    originals = list(CellImage.objects.filter(batch=first).order_by("id")[:3])

    # A second import: copies of three of those cells (other bytes), each in a case of its own, a byte-identical
    # file, and three distinct cells of a class not imported before.
    second = tmp_path / "second"
    rows = []
    for n, original in enumerate(originals):
        name = f"{original.final_label.code}/copy_{n}.jpg"
        _copy(_demo_file(original), second / name, quality=90, scale=(0.9, 0.95, 1.1)[n])
        rows.append((name, f"COPY-{n}"))
    same = f"{originals[0].final_label.code}/identical.jpg"
    shutil.copyfile(_demo_file(originals[0]), second / same)
    rows.append((same, "COPY-0"))
    for n in range(3):
        name = f"basophil/distinct_{n}.jpg"
        (second / "basophil").mkdir(exist_ok=True)
        shutil.copyfile(_demo("basophil", n), second / name)
        rows.append((name, f"OTHER-{n}"))
    _write_cases(second, rows)
    # The copies' cases get chosen splits: copy 0 and 1 in another split than their original, copy 2 in the same.
    other = {"train": "test", "validation": "train", "test": "train"}
    for n, original in enumerate(originals):
        split = splits[original.sha256] if n == 2 else other[splits[original.sha256]]
        group = group_key(case_code=f"COPY-{n}", sha256="")
        SplitAssignment.objects.create(group=group, split=split, first_version=version)

    with django_capture_on_commit_callbacks(execute=True):
        batch = _import(admin_user, second, trusted=True)
    assert batch.imported == 6
    assert ImportItem.objects.get(batch=batch, name__endswith="identical.jpg").outcome == ImportItem.Outcome.DUPLICATE

    # Exactly the three copies, each with its own original; the distinct cells are no one's near-duplicate.
    pairs = {(pair.image.original_name, pair.duplicate_of_id): pair.similarity for pair in NearDuplicate.objects.all()}
    assert set(pairs) == {(f"copy_{n}.jpg", o.id) for n, o in enumerate(originals)}
    assert all(s >= index_on.HEMALOOP_NEAR_DUPLICATE_SIMILARITY for s in pairs.values())
    # The admin's import page and its progress API report them; nothing was blocked.
    admin = _client(admin_user)
    page = admin.get(reverse("annotation:batch_detail", kwargs={"batch_id": batch.id})).content.decode()
    assert 'data-field="near_duplicates">3<' in page
    for pair in NearDuplicate.objects.all():
        assert f'data-pair="{pair.image_id}-{pair.duplicate_of_id}"' in page
    progress = admin.get(reverse("annotation_api:batch_progress", kwargs={"batch_id": batch.id})).json()
    assert progress["near_duplicates"] == 3
    first_page = admin.get(reverse("annotation:batch_detail", kwargs={"batch_id": first.id})).content.decode()
    assert 'data-field="near_duplicates">0<' in first_page

    # The next version puts copies 0 and 1 in another split than their originals: the leakage check flags those two.
    cut = DatasetVersionFactory(created_by=admin_user)
    leakage = version_leakage(version=cut)
    assert leakage.near_duplicates_across_splits == 2
    assert not leakage.clean
    assert {(p.sha256, p.other_sha256) for p in leakage.near_duplicate_pairs} == {
        (_by_name(f"copy_{n}.jpg").sha256, originals[n].sha256) for n in (0, 1)
    }
    assert version_leakage(version=version).near_duplicates_across_splits == 0  # the first version had no copies
    detail = admin.get(reverse("releases_api:version_detail", kwargs={"number": cut.number})).json()
    assert detail["leakage"]["near_duplicates_across_splits"] == 2
    version_page = admin.get(reverse("releases:version_detail", kwargs={"number": cut.number})).content.decode()
    assert 'data-leakage="near-duplicates">2<' in version_page

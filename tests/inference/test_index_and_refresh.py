"""The embedding index and the queue that follows the labels, with the real backbone (EfficientNet-Lite0, small
images) and the real head: an import grows the index; trusted labels and then every N new final labels train a
head version that re-orders the queue; a refresh with no new labels is skipped; annotators see none of it; the
model's opinion and Grad-CAM of a head version go through backbone and head."""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from annotation.models import CellImage, LabelStatus
from core.jobs import JobStatus
from core.roles import Role
from inference.models import Embedding, EmbeddingJob, EmbeddingShard, HeadRefreshJob, Prediction
from inference.services.index import index_load, index_space_get, index_spec_for
from inference.services.settings import al_settings_update
from inference.services.starts import head_refresh_start
from tests.inference.pool import folder, import_folder, label_to_final
from tests.test_permissions_matrix import ROWS
from training.models import ModelVersion
from training.selectors import model_version_active

pytestmark = pytest.mark.django_db


def _priorities() -> dict[int, float]:
    return dict(CellImage.objects.filter(priority__gt=0).values_list("id", "priority"))


def _space():
    return index_space_get(spec=index_spec_for(None))


def test_the_index_grows_with_each_import_and_holds_float16_vectors(
    index_on, admin_user, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = import_folder(admin_user, folder(tmp_path / "a", {"case-a": 4, "case-b": 3}, start=70_000))
    space = _space()
    job = EmbeddingJob.objects.get()
    assert (job.status, job.done, job.total) == (JobStatus.SUCCEEDED, 7, 7)
    assert EmbeddingShard.objects.filter(space=space).count() == 2  # 5 + 2
    ids, matrix = index_load(space=space)
    assert list(ids) == sorted(CellImage.objects.filter(batch=first).values_list("id", flat=True))
    assert matrix.dtype == np.float16
    assert matrix.shape == (7, space.dim)
    assert space.dim == 1280
    assert np.isfinite(matrix.astype(np.float32)).all()
    assert matrix.std() > 0
    for shard in EmbeddingShard.objects.all():
        with default_storage.open(shard.file, "rb") as handle:
            assert shard.sha256 == hashlib.sha256(handle.read()).hexdigest()

    with django_capture_on_commit_callbacks(execute=True):
        second = import_folder(admin_user, folder(tmp_path / "b", {"case-c": 3}, start=71_000))
    latest = EmbeddingJob.objects.order_by("-id").first()
    assert (latest.status, latest.done, latest.total) == (JobStatus.SUCCEEDED, 3, 3)  # only the new images
    grown_ids, grown = index_load(space=space)
    assert len(grown_ids) == 10
    assert Embedding.objects.filter(space=space).count() == 10
    assert set(grown_ids) - set(ids) == set(CellImage.objects.filter(batch=second).values_list("id", flat=True))
    # The old vectors are read back unchanged.
    assert np.array_equal(grown[np.isin(grown_ids, ids)], matrix)


def test_the_queue_follows_the_final_labels(
    index_on, admin_user, tmp_path, labeled_demo, make_user, django_capture_on_commit_callbacks
):
    # Every unlabeled cell gets a priority whatever the head predicts (an untrained backbone may favour one class).
    al_settings_update(actor=admin_user, max_class_share=1.0)
    with django_capture_on_commit_callbacks(execute=True):
        unlabeled = import_folder(admin_user, folder(tmp_path / "cells", {"case-u": 6, "case-v": 6}, start=72_000))
    cold_start = _priorities()
    assert len(cold_start) == 12
    assert not ModelVersion.objects.exists()

    # Trusted labels come with an import: the index grows, enough final labels are there, the first head trains.
    with django_capture_on_commit_callbacks(execute=True):
        labeled_demo()
    first = model_version_active()
    assert first is not None
    assert first.is_head
    assert first.run is None
    labels = first.config["labels"]["count"]
    assert labels == CellImage.objects.filter(label_status=LabelStatus.FINAL).count() >= 12
    assert first.metrics["labeled"] == labels
    assert first.metrics["cv_folds"] >= 2
    assert 0 <= first.metrics["cv_macro_f1"] <= 1
    assert first.temperature > 0
    assert first.config["backbone"]["name"] == "tf_efficientnet_lite0"
    assert default_storage.exists(first.out_dir)
    by_head = _priorities()
    assert set(by_head) == set(CellImage.objects.filter(batch=unlabeled).values_list("id", flat=True))
    assert by_head != cold_start
    assert Prediction.objects.filter(model_version=first).count() == CellImage.objects.count()

    # N new final labels from annotators: a refresh runs by itself and re-orders the queue.
    annotators = [make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)]
    cells = list(CellImage.objects.filter(batch=unlabeled).order_by("-priority")[:4])
    with django_capture_on_commit_callbacks(execute=True):
        for image, code in zip(cells, ["neutrophil", "lymphocyte", "eosinophil", "neutrophil"], strict=True):
            label_to_final(image, code, annotators)
    second = model_version_active()
    assert second.pk != first.pk
    assert second.is_head
    assert second.config["labels"]["count"] == labels + 4
    assert second.config["based_on"] == first.pk
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.RETIRED
    refresh = HeadRefreshJob.objects.filter(model_version=second).get()
    assert (refresh.reason, refresh.status) == (HeadRefreshJob.Reason.LABELS, JobStatus.SUCCEEDED)
    after = _priorities()
    assert not {cell.pk for cell in cells} & set(after)  # the labeled cells left the queue
    assert after != by_head

    # Asked again with no new label: skipped, no version registered, the queue untouched.
    with django_capture_on_commit_callbacks(execute=True):
        job = head_refresh_start(actor=admin_user)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.outcome.startswith("skipped: no new final labels")
    assert ModelVersion.objects.count() == 2
    assert model_version_active().pk == second.pk
    assert _priorities() == after

    # The Training page lists the head; the Scoring page shows the index and the refreshes.
    admin = _client(admin_user)
    training = admin.get(reverse("training:home")).content.decode()
    assert "Head on the index" in training
    assert f"{labels + 4} final labels" in training
    detail = admin.get(reverse("training:model_detail", args=[second.pk])).content.decode()
    assert "cross-validated macro-F1" in detail
    scoring = admin.get(reverse("inference:scoring")).content.decode()
    assert "bundled:tf_efficientnet_lite0@32x32" in scoring
    assert "skipped: no new final labels" in scoring

    # The model's opinion and Grad-CAM of the head version, for an adjudicator on a final cell.
    adjudicator = _client(make_user(Role.ADJUDICATOR))
    final = cells[0]
    opinion = adjudicator.get(reverse("inference_api:image_opinion", kwargs={"image_id": final.id}))
    assert opinion.status_code == 200, opinion.content
    assert opinion.json()["model_version"]["id"] == second.pk
    assert len(opinion.json()["top"]) == 3
    heatmap = adjudicator.get(reverse("inference_api:image_gradcam", kwargs={"image_id": final.id}))
    assert heatmap.status_code == 200
    assert heatmap["Content-Type"] == "image/png"

    # Annotators see none of it on any route they can open.
    annotator = _client(annotators[0])
    image = CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS).first()
    top = Prediction.objects.get(model_version=second, image=image)
    words = [f"version {second.pk}", "head on the index", "queue refresh", "embedding index", "macro-f1"]
    markers = [re.compile(re.escape(word)) for word in words]
    # The confidence as the opinion prints it, as a number of its own: "52.6" inside a timestamp such as
    # 04:48:52.612+00:00 (the label page's undo deadline) is a coincidence, not a leak.
    markers.append(re.compile(rf"(?<![\d.:]){re.escape(f'{100 * top.confidence:.1f}')}(?![\d])"))
    opened = 0
    for row in ROWS:
        if row.url in {"/api/schema/", "/api/docs/", "/accounts/logout/"} or row.expected["annotator"] in (
            "403",
            "login",
        ):
            continue
        response = annotator.generic(row.method, row.concrete_url(image_id=image.id, batch_id=unlabeled.id))
        if not response.streaming:
            text = response.content.decode(errors="replace").lower()
            assert [m.pattern for m in markers if m.search(text)] == [], f"{row.method} {row.url}"
        opened += 1
    assert opened >= 10
    assert annotator.get(reverse("inference:scoring")).status_code == 403
    assert annotator.post(reverse("inference:refresh")).status_code == 403
    assert HeadRefreshJob.objects.count() == 3  # two that trained, one skipped; the annotator's POST queued nothing


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_demo_starts_with_an_active_head_on_its_trusted_third_and_reuses_it(
    index_on, admin_user, django_capture_on_commit_callbacks
):
    index_on.HEMALOOP_HEAD_REFRESH_EVERY = 100  # the default: the demo's 60 trusted labels do not trigger one
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_demo", stdout=out)
    assert not ModelVersion.objects.exists()
    # The import's own embedding pass ran on commit; the command finds the index complete and trains the head.
    call_command("demo_model", stdout=out)
    head = model_version_active()
    assert head is not None
    assert head.is_head
    assert head.config["labels"]["count"] == CellImage.objects.filter(label_status=LabelStatus.FINAL).count()
    assert "demo model: model version" in out.getvalue()
    queue = list(CellImage.objects.filter(priority__gt=0).values_list("label_status", flat=True))
    assert queue
    assert set(queue) == {LabelStatus.NEEDS_LABELS}
    assert Prediction.objects.filter(model_version=head).count() == 180

    again = io.StringIO()
    call_command("demo_model", stdout=again)
    assert again.getvalue().strip() == f"demo model already trained (model version {head.pk}, Active)"
    assert ModelVersion.objects.count() == 1

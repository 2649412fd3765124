"""Scoring the pool for real: a smoke-trained ensemble on demo images writes one calibrated Prediction per image."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import CellImage
from core.jobs import JobStatus
from inference.errors import ModelUnavailable
from inference.models import Prediction, ScoringJob
from inference.services import scoring
from inference.services.scoring import scoring_job_run
from inference.services.starts import scoring_enqueue
from tests.factories.annotation import batch_make, image_make
from tests.inference.fakes import FakeEnsemble
from training.models import ModelVersion
from training.services.execute import training_run_execute
from training.services.runs import training_run_start
from training.services.versions import model_version_activate

pytestmark = pytest.mark.django_db


def _queued(version: ModelVersion) -> ScoringJob:
    """A queued whole-pool job, as Rescore leaves it (its task is not sent: on_commit never fires here)."""
    return scoring_enqueue(model_version=version, scope=ScoringJob.Scope.ALL, actor=None)


def test_scoring_writes_one_calibrated_prediction_per_image(
    labeled_demo, admin_user, settings, django_capture_on_commit_callbacks
):
    # A one-epoch model may predict one class for everything: no class cap, so all three unlabeled get picked.
    settings.HEMALOOP_AL_MAX_CLASS_SHARE = 1.0
    labeled_demo()
    run = training_run_execute(run=training_run_start(requested_by=admin_user, profile="smoke"))
    assert run.status == JobStatus.SUCCEEDED, run.error
    version = ModelVersion.objects.get(run=run)
    batch = batch_make(created_by=admin_user)
    unlabeled = [image_make(batch=batch) for _ in range(3)]
    progress = []

    job = scoring_job_run(job_id=_queued(version).pk, batch_size=8, chunk=16, on_progress=lambda *p: progress.append(p))

    pool = CellImage.objects.count()
    assert Prediction.objects.filter(model_version=version).count() == pool
    assert progress[-1] == (pool, pool)
    assert len(progress) == -(-pool // 16)  # one report per chunk of 16
    assert (job.status, job.done, job.total) == ("succeeded", pool, pool)
    assert job.started_at is not None
    assert job.finished_at >= job.started_at
    classes = [row["code"] for row in sorted(run.dataset_version.taxonomy, key=lambda row: row["order"])]
    for row in Prediction.objects.filter(model_version=version).select_related("predicted_class"):
        p = np.asarray(row.probabilities)
        assert len(p) == len(classes)
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert row.predicted_class.code == classes[int(p.argmax())]
        assert row.confidence == pytest.approx(p.max())
        assert row.margin == pytest.approx(p.max() - np.sort(p)[-2])

    # Activation queues a whole-pool job and its task runs it: a rescore upserts (still one row per image) and
    # orders the queue.
    with django_capture_on_commit_callbacks(execute=True):
        model_version_activate(version=version, actor=admin_user)
    activated = ScoringJob.objects.exclude(pk=job.pk).get()
    assert (activated.status, activated.scope, activated.done) == ("succeeded", "all", pool)
    assert activated.requested_by == admin_user
    assert Prediction.objects.filter(model_version=version).count() == pool
    assert {image.pk for image in unlabeled} == set(
        CellImage.objects.filter(priority__gt=0).values_list("pk", flat=True)
    )

    # The device decoder (batched, nvJPEG on a GPU) re-scores the same pool to nearly the same probabilities.
    before = {row.image_id: row.probabilities for row in Prediction.objects.filter(model_version=version)}
    settings.HEMALOOP_SCORING_DECODER = "device"
    assert scoring_job_run(job_id=_queued(version).pk, batch_size=8, chunk=16).done == pool
    for row in Prediction.objects.filter(model_version=version):
        np.testing.assert_allclose(row.probabilities, before[row.image_id], atol=2e-2)


def test_a_version_without_an_ensemble_fails_its_scoring_job(make_version, batch):
    version = make_version()  # registered, but nothing on disk under out_dir
    image_make(batch=batch)

    job = _queued(version)

    with pytest.raises(ModelUnavailable):
        scoring_job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.finished_at is not None
    assert "ensemble.json" in job.error
    assert not Prediction.objects.exists()


def test_one_loader_spans_many_write_rounds_and_every_image_gets_its_own_row(make_version, batch, monkeypatch):
    ensemble = FakeEnsemble().install(monkeypatch)
    loaders = []
    stream = scoring.ensemble_score_stream
    monkeypatch.setattr(
        scoring,
        "ensemble_score_stream",
        lambda e, paths, **options: loaders.append(len(paths)) or stream(e, paths, **options),
    )
    monkeypatch.setattr(scoring, "SCORING_LOADER_CHUNK", 5)
    version = make_version()
    for _ in range(5):
        image_make(batch=batch)
    assert CellImage.objects.count() == 7  # the fixture's two labeled images too
    progress = []

    job = scoring_job_run(job_id=_queued(version).pk, batch_size=3, chunk=2, on_progress=lambda *p: progress.append(p))

    assert job.done == 7

    assert loaders == [5, 2]  # a loader per 5 images, however often the rows are written
    assert progress == [(3, 7), (5, 7), (7, 7)]  # written as soon as a batch brings the round to 2 or more
    rows = {p.image_id: p for p in Prediction.objects.filter(model_version=version)}
    assert set(rows) == set(CellImage.objects.values_list("pk", flat=True))
    # The fake's confidence falls with the position inside each loader's paths: 0.9, 0.85, ... per loader.
    expected = [*ensemble.predict_proba([None] * 5)[:, 0], *ensemble.predict_proba([None] * 2)[:, 0]]
    ordered = [rows[pk].probabilities[0] for pk in sorted(rows)]
    assert ordered == pytest.approx(expected)  # each row's probabilities belong to its own image

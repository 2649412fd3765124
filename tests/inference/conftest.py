"""Fixtures for the inference tests: model versions without training, and predictions with chosen probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import CellClass, CellImage
from core.jobs import JobStatus
from inference.models import Prediction
from releases.services.versions import dataset_version_create
from tests.annotation.imagedata import batch_make, image_make
from tests.training.conftest import _validation_gets_whole_cases, labeled_demo  # noqa: F401 - re-exported fixtures
from training.ml.uncertainty import prediction_stats
from training.models import ModelVersion, TrainingRun


@pytest.fixture
def batch(admin_user):
    return batch_make(created_by=admin_user)


@pytest.fixture
def make_version(admin_user, batch):
    """make_version(status) -> a registered ModelVersion with no ensemble on disk (predictions are seeded)."""
    image_make(batch=batch, final_label="neutrophil")
    image_make(batch=batch, final_label="lymphocyte")
    dataset_version = dataset_version_create(created_by=admin_user)

    def make(status: str = ModelVersion.Status.CANDIDATE) -> ModelVersion:
        run = TrainingRun.objects.create(
            dataset_version=dataset_version,
            profile="smoke",
            config={},
            requested_by=admin_user,
            status=JobStatus.SUCCEEDED,
        )
        return ModelVersion.objects.create(
            run=run, out_dir="models/none", config={}, temperature=1.0, metrics={}, status=status
        )

    return make


@pytest.fixture
def predict():
    """predict(version, image, {code: p, ...}) -> a Prediction; the unnamed classes share what is left equally."""
    codes = list(CellClass.objects.order_by("order").values_list("code", flat=True))
    ids = dict(CellClass.objects.values_list("code", "id"))

    def make(version: ModelVersion, image: CellImage, probs: dict[str, float]) -> Prediction:
        rest = (1.0 - sum(probs.values())) / (len(codes) - len(probs))
        vector = np.array([probs.get(code, rest) for code in codes])
        top, confidence, margin, entropy = prediction_stats(vector[None, :])
        return Prediction.objects.create(
            image=image,
            model_version=version,
            probabilities=vector.tolist(),
            predicted_class_id=ids[codes[top[0]]],
            confidence=float(confidence[0]),
            margin=float(margin[0]),
            entropy=float(entropy[0]),
        )

    return make

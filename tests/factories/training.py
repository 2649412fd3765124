"""Training runs and the model versions they register, without training anything."""

from __future__ import annotations

import factory

from core.jobs import JobStatus
from core.roles import Role
from tests.factories.accounts import UserFactory
from tests.factories.releases import DatasetVersionFactory
from training.models import ModelVersion, TrainingRun


class TrainingRunFactory(factory.django.DjangoModelFactory):
    """A queued smoke-profile run over a new dataset version (pass dataset_version= to reuse one)."""

    class Meta:
        model = TrainingRun

    requested_by = factory.SubFactory(UserFactory, role=Role.ADMIN)
    dataset_version = factory.SubFactory(DatasetVersionFactory, created_by=factory.SelfAttribute("..requested_by"))
    profile = "smoke"
    config = factory.Dict({})


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A candidate version of a succeeded run; out_dir holds no ensemble unless a test writes one there."""

    class Meta:
        model = ModelVersion

    run = factory.SubFactory(TrainingRunFactory, status=JobStatus.SUCCEEDED)
    out_dir = "models/none"
    config = factory.Dict({})
    temperature = 1.0
    metrics = factory.Dict({})
    status = ModelVersion.Status.CANDIDATE

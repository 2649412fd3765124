"""Dataset versions, cut through the service (a version is a frozen copy of today's final labels)."""

from __future__ import annotations

import factory

from core.roles import Role
from releases.models import DatasetVersion
from releases.services.versions import dataset_version_create
from tests.factories.accounts import UserFactory


class DatasetVersionFactory(factory.django.DjangoModelFactory):
    """DatasetVersionFactory(created_by=researcher) -> the next version; needs at least one final label."""

    class Meta:
        model = DatasetVersion

    created_by = factory.SubFactory(UserFactory, role=Role.ADMIN)

    @classmethod
    def _create(cls, model_class, *args, **fields):
        return dataset_version_create(**fields)

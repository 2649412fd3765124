"""Users, with or without one of the four roles."""

from __future__ import annotations

import factory
from django.conf import settings

from accounts.services import user_create

PASSWORD = "pw-not-used-1234"  # noqa: S105 - a test-only password


class UserFactory(factory.django.DjangoModelFactory):
    """UserFactory(role=Role.ANNOTATOR) -> an active user holding that role; role=None gives one without any."""

    class Meta:
        model = settings.AUTH_USER_MODEL

    role = None
    username = factory.LazyAttributeSequence(lambda o, n: f"{o.role.value if o.role else 'norole'}{n + 1}")
    password = PASSWORD

    @classmethod
    def _create(cls, model_class, *args, role=None, **fields):
        if role is None:
            return model_class.objects.create_user(**fields)
        # Through the service, so the role's group and the admin's is_staff are what production gives them.
        user, _ = user_create(role=role, **fields)
        return user

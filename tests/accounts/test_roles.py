import pytest

from accounts.services import user_create
from annotation.models import CellClass
from core.roles import Role, user_roles


@pytest.mark.django_db
def test_taxonomy_is_seeded_with_twelve_classes_and_unique_hotkeys():
    classes = list(CellClass.objects.all())
    assert [c.code for c in classes][:2] == ["neutrophil", "band_neutrophil"]
    assert len(classes) == 12
    assert {c.group for c in classes} == {"normal", "immature"}
    assert len({c.hotkey for c in classes}) == 12


@pytest.mark.django_db
def test_user_create_gives_the_role_and_a_random_password():
    user, password = user_create(username="ann", role=Role.ANNOTATOR)
    other, other_password = user_create(username="bob", role=Role.ANNOTATOR)
    assert user_roles(user) == {Role.ANNOTATOR}
    assert password != other_password
    assert len(password) >= 12
    assert user.check_password(password)

"""The Django admin as HemaLoop configures it: taxonomy editable but codes frozen, imports and images read-only."""

from __future__ import annotations

import pytest

from annotation.models import CellClass
from tests.factories.annotation import batch_make, image_make

pytestmark = pytest.mark.django_db


def test_cell_class_code_is_editable_only_when_creating(client_for, admin_user):
    client = client_for(admin_user)
    neutrophil = CellClass.objects.get(code="neutrophil")
    change = client.get(f"/admin/annotation/cellclass/{neutrophil.id}/change/").content.decode()
    assert 'name="code"' not in change
    assert 'name="name"' in change
    assert 'name="code"' in client.get("/admin/annotation/cellclass/add/").content.decode()

    response = client.post(
        f"/admin/annotation/cellclass/{neutrophil.id}/change/",
        {
            "code": "renamed",
            "name": "Segmented neutrophil",
            "group": "normal",
            "hotkey": "1",
            "order": 1,
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    neutrophil.refresh_from_db()
    assert (neutrophil.code, neutrophil.name) == ("neutrophil", "Segmented neutrophil")


def test_imports_and_images_are_read_only_in_the_admin(client_for, admin_user):
    batch = batch_make(created_by=admin_user)
    image = image_make(batch=batch)
    client = client_for(admin_user)
    assert client.get(f"/admin/annotation/cellimage/{image.id}/change/").status_code == 200
    assert client.get("/admin/annotation/cellimage/add/").status_code == 403
    assert client.get("/admin/annotation/importbatch/add/").status_code == 403
    assert client.get(f"/admin/annotation/cellimage/{image.id}/delete/").status_code == 403
    assert client.get(f"/admin/annotation/importbatch/{batch.id}/delete/").status_code == 403
    listing = client.get("/admin/annotation/cellimage/").content.decode()
    assert image.sha256[:12] in listing


def test_user_admin_lists_roles(client_for, admin_user, annotator):
    html = client_for(admin_user).get("/admin/auth/user/").content.decode()
    assert f">{annotator.username}<" in html
    assert ">annotator<" in html

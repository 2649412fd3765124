"""Near-duplicate pairs as annotation keeps and shows them (the measuring is inference's: tests/inference/
test_similar_cells.py): each pair once whichever way round it comes, on the import that brought the later cell, and
never a pair with a cell the viewer may still label."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from annotation.models import NearDuplicate
from annotation.services.near_duplicates import near_duplicates_record
from core.jobs import JobStatus
from core.roles import Role
from tests.factories.annotation import batch_make, image_make

pytestmark = pytest.mark.django_db


def test_a_pair_is_recorded_once_with_the_later_cell_first(admin_user):
    batch = batch_make(created_by=admin_user)
    a, b, c = (image_make(batch=batch, final_label="neutrophil") for _ in range(3))
    assert near_duplicates_record(pairs=[(b.id, a.id, 0.99), (a.id, b.id, 0.99), (c.id, c.id, 1.0)], space_key="s") == 1
    assert near_duplicates_record(pairs=[(a.id, b.id, 0.98), (c.id, a.id, 0.97)], space_key="s") == 1
    assert set(NearDuplicate.objects.values_list("image_id", "duplicate_of_id", "similarity")) == {
        (b.id, a.id, 0.99),
        (c.id, a.id, 0.97),
    }


def test_the_import_page_leaves_out_pairs_with_a_cell_the_viewer_may_still_label(admin_user, make_user):
    earlier = batch_make(created_by=admin_user, status=JobStatus.SUCCEEDED)
    batch = batch_make(created_by=admin_user, status=JobStatus.SUCCEEDED)
    labeled = image_make(batch=earlier, final_label="neutrophil")
    unlabeled = image_make(batch=earlier)
    copies = [image_make(batch=batch, final_label="neutrophil") for _ in range(2)]
    near_duplicates_record(
        pairs=[(copies[0].id, labeled.id, 0.99), (copies[1].id, unlabeled.id, 0.98)], space_key="bundled"
    )
    dual = make_user(Role.ADMIN)
    dual.groups.add(Group.objects.get(name=Role.ANNOTATOR.value))
    url = reverse("annotation:batch_detail", kwargs={"batch_id": batch.id})

    def pairs_on_page(user) -> set[str]:
        client = Client()
        client.force_login(user)
        page = client.get(url).content.decode()
        assert 'data-field="near_duplicates">2<' in page  # the count is the batch's, whoever looks
        pairs = (f"{c.id}-{o.id}" for c, o in zip(copies, (labeled, unlabeled), strict=True))
        return {pair for pair in pairs if f'data-pair="{pair}"' in page}

    assert pairs_on_page(admin_user) == {f"{copies[0].id}-{labeled.id}", f"{copies[1].id}-{unlabeled.id}"}
    assert pairs_on_page(dual) == {f"{copies[0].id}-{labeled.id}"}  # the unlabeled cell is hidden from them
    assert NearDuplicate.objects.filter(image__batch=earlier).count() == 0  # reported on the later cell's import

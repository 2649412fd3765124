"""The consensus queue as adjudicators see it: each cell with both labels, and why a re-opened cell is back."""

from __future__ import annotations

import pytest

from annotation.models import CellClass
from annotation.selectors import consensus_items, consensus_list, consensus_next
from annotation.services.consensus import consensus_resolve, label_reopen
from annotation.services.labeling import annotation_flag, annotation_submit, annotation_undo
from core.roles import Role
from tests.factories.annotation import batch_make, hold, image_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(admin_user):
    batch = batch_make(created_by=admin_user)
    return [image_make(batch=batch) for _ in range(3)]


@pytest.fixture
def alice(make_user):
    return make_user(Role.ANNOTATOR, username="ann_alice")


@pytest.fixture
def bob(make_user):
    return make_user(Role.ANNOTATOR, username="ann_bob")


def _label(image, annotator, code: str) -> None:
    hold(image=image, annotator=annotator)
    annotation_submit(image_id=image.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))


def test_a_disagreement_shows_both_labels_and_no_reopening(images, alice, bob, admin_user):
    _label(images[0], alice, "myeloblast")
    _label(images[0], bob, "lymphoblast")
    item = consensus_next(viewer=admin_user)
    assert item.image == images[0]
    assert [(label.annotator.username, label.cell_class.code) for label in item.labels] == [
        ("ann_alice", "myeloblast"),
        ("ann_bob", "lymphoblast"),
    ]
    assert item.reopened is None


def test_a_reopened_final_label_says_who_reopened_it_what_it_was_and_why(images, alice, bob, make_user, admin_user):
    adjudicator = make_user(Role.ADJUDICATOR, username="dr_adj")
    _label(images[0], alice, "myelocyte")
    _label(images[0], bob, "myelocyte")
    label_reopen(image_id=images[0].id, actor=adjudicator, reason="Granules look toxic")
    reopened = consensus_next(viewer=admin_user).reopened
    assert (reopened.actor.username, reopened.cell_class.code, reopened.note) == (
        "dr_adj",
        "myelocyte",
        "Granules look toxic",
    )
    # Resolved and re-opened again: the latest reason is the one that counts.
    band = CellClass.objects.get(code="band_neutrophil")
    consensus_resolve(image_id=images[0].id, adjudicator=adjudicator, cell_class=band)
    label_reopen(image_id=images[0].id, actor=adjudicator, reason="Second opinion: metamyelocyte?")
    reopened = consensus_next(viewer=admin_user).reopened
    assert (reopened.cell_class.code, reopened.note) == ("band_neutrophil", "Second opinion: metamyelocyte?")


def test_a_new_disagreement_after_a_reopening_is_why_the_cell_is_back(images, alice, bob, make_user, admin_user):
    _label(images[0], alice, "monocyte")
    _label(images[0], bob, "monocyte")
    label_reopen(image_id=images[0].id, actor=make_user(Role.ADJUDICATOR), reason="Check again")
    annotation_undo(annotator=bob)  # inside the grace period: bob takes his label back, the re-opening with it
    _label(images[0], bob, "lymphocyte")
    item = consensus_next(viewer=admin_user)
    assert item.image == images[0]
    assert item.reopened is None
    assert [label.cell_class.code for label in item.labels] == ["monocyte", "lymphocyte"]


def test_a_page_of_items_costs_the_same_queries_however_long(
    images, alice, bob, make_user, admin_user, django_assert_num_queries
):
    adjudicator = make_user(Role.ADJUDICATOR)
    for image in images:
        _label(image, alice, "myeloblast")
        _label(image, bob, "myeloblast")
        label_reopen(image_id=image.id, actor=adjudicator, reason=f"cell {image.id}")
    page = list(consensus_list(viewer=admin_user))
    with django_assert_num_queries(2):
        items = consensus_items(images=page)
    assert [item.reopened.note for item in items] == [f"cell {image.id}" for image in images]


def test_the_queue_serves_the_longest_waiting_cell_first(images, alice, bob, make_user, admin_user):
    _label(images[2], alice, "myeloblast")
    _label(images[2], bob, "lymphoblast")  # the last imported cell disagrees first
    _label(images[0], alice, "monocyte")
    _label(images[0], bob, "lymphocyte")
    assert list(consensus_list(viewer=admin_user)) == [images[2], images[0]]
    # Resolved and re-opened later: it waits behind the cell that has been waiting since.
    adjudicator = make_user(Role.ADJUDICATOR)
    myeloblast = CellClass.objects.get(code="myeloblast")
    consensus_resolve(image_id=images[2].id, adjudicator=adjudicator, cell_class=myeloblast)
    label_reopen(image_id=images[2].id, actor=adjudicator, reason="Auer rods?")
    assert list(consensus_list(viewer=admin_user)) == [images[0], images[2]]
    assert consensus_next(viewer=admin_user).image == images[0]


def test_a_flagged_final_cell_waits_from_when_it_was_flagged(images, alice, bob, admin_user):
    _label(images[0], alice, "monocyte")
    _label(images[0], bob, "monocyte")  # final by agreement
    _label(images[1], alice, "myeloblast")
    _label(images[1], bob, "lymphoblast")  # in the queue
    annotation_flag(annotator=alice, public_id=images[0].public_id)
    _label(images[2], alice, "myeloblast")
    _label(images[2], bob, "lymphoblast")
    assert list(consensus_list(viewer=admin_user)) == [images[1], images[0], images[2]]


def test_a_flag_on_a_cell_already_waiting_keeps_its_place(images, alice, bob, admin_user):
    _label(images[0], alice, "myeloblast")
    _label(images[0], bob, "lymphoblast")  # waiting first
    _label(images[1], alice, "monocyte")
    _label(images[1], bob, "lymphocyte")
    annotation_flag(annotator=alice, public_id=images[0].public_id)  # asks again; it is already in the queue
    assert list(consensus_list(viewer=admin_user)) == [images[0], images[1]]


def test_a_flag_before_the_second_label_waits_from_the_disagreement(images, alice, bob, admin_user):
    _label(images[0], alice, "monocyte")
    annotation_flag(annotator=alice, public_id=images[0].public_id)  # not in the queue yet: one label
    _label(images[1], alice, "myeloblast")
    _label(images[1], bob, "lymphoblast")
    _label(images[0], bob, "monocyte")  # agreement, but flagged: it enters the queue only now
    assert list(consensus_list(viewer=admin_user)) == [images[1], images[0]]

"""The labeling queue, labels, undo, skip, consensus and re-open, through the service layer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from sklearn.metrics import cohen_kappa_score

from annotation.models import Annotation, CellClass, CellImage, LabelEvent, LabelStatus, Lease
from annotation.selectors import image_history, labeling_progress
from annotation.selectors.agreement import agreement_stats
from annotation.services.consensus import AlreadyResolved, NotFinal, ReasonRequired, consensus_resolve, label_reopen
from annotation.services.labeling import (
    UNDO_EXPIRED_MESSAGE,
    NotHeld,
    NothingToFlag,
    NothingToUndo,
    UndoExpired,
    annotation_flag,
    annotation_submit,
    annotation_undo,
    queue_next,
    queue_skip,
    undo_deadline,
)
from core.errors import PermissionRefused
from core.roles import Role
from tests.factories.annotation import batch_make, image_make


def cls(code: str) -> CellClass:
    return CellClass.objects.get(code=code)


@pytest.fixture
def pool(admin_user):
    batch = batch_make(created_by=admin_user)
    return [image_make(batch=batch) for _ in range(3)]


@pytest.fixture
def annotators(make_user):
    return [make_user(Role.ANNOTATOR) for _ in range(4)]


def label(image, user, code: str | None):
    queue_item = queue_next(annotator=user)
    assert queue_item is not None
    return annotation_submit(image_id=image.id, annotator=user, cell_class=cls(code) if code else None)


def test_queue_order_priority_then_half_labeled_then_oldest(pool, annotators):
    a, b, c, _ = annotators
    first, second, third = pool
    assert queue_next(annotator=a).image == first  # all equal: oldest first
    annotation_submit(image_id=first.id, annotator=a, cell_class=cls("neutrophil"))
    # b: `first` already has one label, so it comes before the older-but-unlabeled rest.
    CellImage.objects.filter(pk=second.pk).update(priority=0)
    assert queue_next(annotator=b).image == first
    CellImage.objects.filter(pk=third.pk).update(priority=5.0)
    assert queue_next(annotator=c).image == third  # priority beats everything


def test_a_reloaded_page_resumes_the_held_cell(pool, annotators):
    a = annotators[0]
    assert queue_next(annotator=a).image == queue_next(annotator=a).image
    assert Lease.objects.filter(annotator=a).count() == 1


def test_no_more_holders_than_labels_needed_until_the_lease_expires(pool, annotators):
    a, b, c, _ = annotators
    image = pool[0]
    CellImage.objects.filter(pk=image.pk).update(priority=10)
    assert queue_next(annotator=a).image == image
    assert queue_next(annotator=b).image == image
    assert queue_next(annotator=c).image != image  # two holders for two labels: c gets another cell
    Lease.objects.filter(annotator=a).update(expires_at=timezone.now() - timedelta(seconds=1))
    Lease.objects.filter(annotator=c).delete()
    assert queue_next(annotator=c).image == image  # a's hold lapsed


def test_equal_labels_become_final_by_agreement(pool, annotators):
    a, b, *_ = annotators
    image = pool[0]
    label(image, a, "myeloblast")
    label(image, b, "myeloblast")
    image.refresh_from_db()
    assert (image.label_status, image.final_label.code, image.final_method) == (
        LabelStatus.FINAL,
        "myeloblast",
        "agreement",
    )


def test_two_unclassifiable_labels_are_a_final_outcome(pool, annotators):
    a, b, *_ = annotators
    image = pool[0]
    label(image, a, None)
    label(image, b, None)
    image.refresh_from_db()
    assert image.label_status == LabelStatus.FINAL
    assert image.final_label is None


def test_different_labels_go_to_consensus_and_the_first_adjudicator_wins(pool, annotators, make_user):
    a, b, *_ = annotators
    image = pool[0]
    label(image, a, "myeloblast")
    label(image, b, "lymphoblast")
    image.refresh_from_db()
    assert image.label_status == LabelStatus.CONSENSUS
    assert image.final_label is None
    first, second = make_user(Role.ADJUDICATOR, username="dr_first"), make_user(Role.ADJUDICATOR)
    consensus_resolve(image_id=image.id, adjudicator=first, cell_class=cls("promyelocyte"), note="Granules")
    with pytest.raises(AlreadyResolved, match="dr_first"):
        consensus_resolve(image_id=image.id, adjudicator=second, cell_class=cls("myeloblast"))
    image.refresh_from_db()
    assert image.final_label.code == "promyelocyte"
    assert image.final_method == "adjudicated"


def test_a_label_is_accepted_only_for_a_cell_the_queue_handed_me_while_i_hold_it(pool, annotators):
    a, b, c, _ = annotators
    image = pool[0]
    label(image, a, "monocyte")
    with pytest.raises(NotHeld):  # labeled already: the hold went with the label
        annotation_submit(image_id=image.id, annotator=a, cell_class=cls("lymphocyte"))
    with pytest.raises(NotHeld):  # never handed to c
        annotation_submit(image_id=pool[1].id, annotator=c, cell_class=cls("monocyte"))
    assert queue_next(annotator=c).image == image
    Lease.objects.filter(annotator=c).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(NotHeld):  # the hold expired
        annotation_submit(image_id=image.id, annotator=c, cell_class=cls("monocyte"))
    label(image, b, "monocyte")
    with pytest.raises(NotHeld):  # final now: refused the same way
        annotation_submit(image_id=image.id, annotator=c, cell_class=cls("monocyte"))
    assert Annotation.objects.filter(image=image).count() == 2


def test_skip_returns_the_cell_to_others_but_not_to_the_skipper(pool, annotators):
    a, b, *_ = annotators
    image = pool[0]
    assert queue_next(annotator=a).image == image
    queue_skip(image_id=image.id, annotator=a)
    assert not Lease.objects.filter(annotator=a).exists()
    assert queue_next(annotator=a).image != image
    assert queue_next(annotator=b).image == image


def test_undo_takes_back_the_last_label_and_keeps_it_in_the_history(pool, annotators):
    a, b, *_ = annotators
    image = pool[0]
    label(image, a, "eosinophil")
    label(image, b, "basophil")
    item = annotation_undo(annotator=b)
    assert item.image == image
    image.refresh_from_db()
    assert (image.label_status, image.label_count) == (LabelStatus.NEEDS_LABELS, 1)
    annotation_submit(image_id=image.id, annotator=b, cell_class=cls("eosinophil"))
    image.refresh_from_db()
    assert image.final_label.code == "eosinophil"
    kinds = [e.kind for e in image_history(image=image)]
    assert kinds == ["label", "label", "disagreement", "undo", "withdrawn", "label", "agreement"]
    assert Annotation.objects.filter(image=image).count() == 3  # the undone label is kept


@pytest.mark.parametrize("colleague", ["eosinophil", "basophil", None], ids=["agreement", "consensus", "waiting"])
def test_undo_in_the_grace_period_withdraws_whatever_my_label_decided(pool, annotators, colleague):
    a, b, *_ = annotators
    image = pool[0]
    if colleague:
        label(image, a, colleague)
    label(image, b, "eosinophil")
    queue_next(annotator=b)  # the page asks for the next cell at once: that does not end the grace period
    item = annotation_undo(annotator=b)
    image.refresh_from_db()
    assert item.image == image
    assert (image.label_status, image.final_label, image.final_method, image.finalized_at) == (
        LabelStatus.NEEDS_LABELS,
        None,
        "",
        None,
    )
    assert image.label_count == (1 if colleague else 0)
    assert Lease.objects.filter(image=image, annotator=b, expires_at__gt=timezone.now()).exists()
    withdrawn = image.events.filter(kind=LabelEvent.Kind.WITHDRAWN)
    assert withdrawn.count() == (1 if colleague else 0)


@pytest.mark.parametrize("colleague", ["eosinophil", "basophil", None], ids=["agreement", "consensus", "waiting"])
def test_undo_is_refused_the_same_way_after_the_grace_period(pool, annotators, colleague, settings):
    a, b, *_ = annotators
    image = pool[0]
    with pytest.raises(NothingToUndo):
        annotation_undo(annotator=b)
    if colleague:
        label(image, a, colleague)
    mine = label(image, b, "eosinophil")
    # The label is older than the grace period (moving its time back is moving the clock forward).
    Annotation.objects.filter(pk=mine.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.HEMALOOP_UNDO_GRACE_SECONDS + 1)
    )
    before = CellImage.objects.values().get(pk=image.pk)
    with pytest.raises(UndoExpired) as refused:
        annotation_undo(annotator=b)
    assert (refused.value.status, refused.value.code, refused.value.message) == (
        409,
        "undo_expired",
        UNDO_EXPIRED_MESSAGE,
    )
    assert CellImage.objects.values().get(pk=image.pk) == before
    assert undo_deadline(annotator=b) is None


def test_undo_ends_once_i_move_on_to_another_cell(pool, annotators):
    a = annotators[0]
    first, second, third = pool
    label(first, a, "eosinophil")
    assert undo_deadline(annotator=a) is not None
    assert queue_next(annotator=a).image == second
    queue_skip(image_id=second.id, annotator=a)
    with pytest.raises(UndoExpired):
        annotation_undo(annotator=a)
    label(third, a, "monocyte")
    annotation_undo(annotator=a)  # the newest label can be undone, the older one never again
    with pytest.raises(NothingToUndo):
        annotation_undo(annotator=a)


def test_a_flagged_label_sends_its_cell_to_the_adjudicators(pool, annotators):
    a, b, c, _ = annotators
    final, waiting = pool[0], pool[1]
    label(final, a, "eosinophil")
    label(final, b, "eosinophil")
    annotation_flag(annotator=b, note="Pressed the wrong key")
    annotation_flag(annotator=b)  # twice: nothing more happens
    final.refresh_from_db()
    assert (final.label_status, final.final_label) == (LabelStatus.CONSENSUS, None)
    flags = final.events.filter(kind=LabelEvent.Kind.FLAGGED)
    assert [(e.actor, e.note) for e in flags] == [(b, "Pressed the wrong key")]

    # A flagged label on a cell that waits for its second label: equal labels do not settle it then.
    label(waiting, c, "monocyte")
    annotation_flag(annotator=c, public_id=waiting.public_id)
    label(waiting, a, "monocyte")
    waiting.refresh_from_db()
    assert waiting.label_status == LabelStatus.CONSENSUS
    with pytest.raises(NothingToFlag):
        annotation_flag(annotator=c, public_id=final.public_id)  # a cell of a colleague's label, not of theirs


def test_reopen_needs_a_reason_and_appends_to_the_history(pool, annotators, make_user):
    a, b, *_ = annotators
    image = pool[0]
    adjudicator = make_user(Role.ADJUDICATOR)
    with pytest.raises(NotFinal):
        label_reopen(image_id=image.id, actor=adjudicator, reason="x")
    label(image, a, "neutrophil")
    label(image, b, "neutrophil")
    with pytest.raises(ReasonRequired, match="reason"):
        label_reopen(image_id=image.id, actor=adjudicator, reason="  ")
    label_reopen(image_id=image.id, actor=adjudicator, reason="Looks like a band form")
    consensus_resolve(image_id=image.id, adjudicator=adjudicator, cell_class=cls("band_neutrophil"))
    events = list(image_history(image=image))
    reopened = next(e for e in events if e.kind == LabelEvent.Kind.REOPENED)
    assert (reopened.note, reopened.cell_class.code, reopened.actor) == (
        "Looks like a band form",
        "neutrophil",
        adjudicator,
    )
    assert events[-1].kind == LabelEvent.Kind.ADJUDICATED
    image.refresh_from_db()
    assert image.final_label.code == "band_neutrophil"


def test_progress_counts_only_my_labels(pool, annotators):
    a, b, *_ = annotators
    label(pool[0], a, "monocyte")
    label(pool[0], b, "monocyte")
    label(pool[1], a, "monocyte")
    assert labeling_progress(annotator=a) == {"today": 2, "total": 2, "waiting": 1}
    assert labeling_progress(annotator=b) == {"today": 1, "total": 1, "waiting": 2}


def test_agreement_matches_scikit_learn_on_the_same_pairs(admin_user, annotators):
    a, b, c, _ = annotators
    batch = batch_make(created_by=admin_user)
    given = [
        ("a", "neutrophil", "neutrophil"),
        ("a", "monocyte", "lymphocyte"),
        ("a", "myeloblast", "myeloblast"),
        ("c", "lymphoblast", "myeloblast"),
        ("c", "monocyte", "monocyte"),
        ("c", None, None),
    ]
    users = {"a": a, "c": c}
    for who, first, second in given:
        image = image_make(batch=batch)
        CellImage.objects.filter(pk=image.pk).update(priority=100)
        label(image, users[who], first)
        label(image, b, second)
    stats = agreement_stats()
    firsts = [g[1] or "unclassifiable" for g in given]
    seconds = [g[2] or "unclassifiable" for g in given]
    assert stats.n_images == 6
    assert stats.kappa == pytest.approx(cohen_kappa_score(firsts, seconds), abs=1e-4)
    monocyte = next(row for row in stats.per_class if row["code"] == "monocyte")
    assert (monocyte["n"], monocyte["agreement"]) == (2, 0.5)
    by_user = {row["annotator"]: row for row in stats.per_annotator}
    assert by_user[b.username]["disagreements"] == 2
    assert by_user[b.username]["n"] == 6
    assert sum(map(sum, stats.confusion)) == 6
    assert stats.confusion[stats.labels.index("monocyte")][stats.labels.index("lymphocyte")] == 1
    assert agreement_stats(batch_id=batch.id + 1000).n_images == 0


# --- who may act: the services check the same roles as the pages and the API ---------------------------------


@pytest.mark.parametrize("role", [Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN])
def test_only_annotators_may_take_label_skip_or_undo(pool, make_user, role):
    user = make_user(role)
    image = pool[0]
    actions = [
        lambda: queue_next(annotator=user),
        lambda: annotation_submit(image_id=image.id, annotator=user, cell_class=cls("neutrophil")),
        lambda: queue_skip(image_id=image.id, annotator=user),
        lambda: annotation_undo(annotator=user),
    ]
    for action in actions:
        with pytest.raises(PermissionRefused, match="Only annotators may label cells."):
            action()
    assert not Lease.objects.exists()
    assert not Annotation.objects.exists()
    assert not image.events.exists()


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.RESEARCHER])
def test_only_adjudicators_and_admins_may_resolve_or_reopen(pool, annotators, make_user, role):
    a, b, *_ = annotators
    in_consensus, final = pool[0], pool[1]
    label(in_consensus, a, "myeloblast")
    label(in_consensus, b, "lymphoblast")
    label(final, a, "neutrophil")
    label(final, b, "neutrophil")
    user = make_user(role)

    with pytest.raises(PermissionRefused, match="Only adjudicators and admins may resolve disagreements."):
        consensus_resolve(image_id=in_consensus.id, adjudicator=user, cell_class=cls("myeloblast"))
    with pytest.raises(PermissionRefused, match="Only adjudicators and admins may re-open final labels."):
        label_reopen(image_id=final.id, actor=user, reason="Looks like a band form")

    statuses = dict(CellImage.objects.filter(pk__in=[in_consensus.id, final.id]).values_list("id", "label_status"))
    assert statuses == {in_consensus.id: LabelStatus.CONSENSUS, final.id: LabelStatus.FINAL}


def test_an_admin_may_resolve_and_reopen(pool, annotators, admin_user):
    a, b, *_ = annotators
    image = pool[0]
    label(image, a, "myeloblast")
    label(image, b, "lymphoblast")
    consensus_resolve(image_id=image.id, adjudicator=admin_user, cell_class=cls("myeloblast"))
    label_reopen(image_id=image.id, actor=admin_user, reason="Second look")
    image.refresh_from_db()
    assert image.label_status == LabelStatus.CONSENSUS

"""Cutting versions: numbering, what is frozen (and what is left out), who may cut, cuts running at once."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from annotation.models import Annotation, CellClass
from core.roles import Role
from releases.models import DatasetArchive, DatasetVersion, ManifestEntry, ReleaseSettings
from releases.services.versions import ReleaseEmpty, dataset_version_create


@pytest.mark.django_db
def test_versions_are_numbered_with_their_parent_author_title_and_notes(cell, cut, admin_user, researcher):
    cell("neutrophil")
    v1 = cut(title="  First  ", notes="Pilot.")
    v2 = cut(created_by=admin_user)
    assert (v1.number, v1.parent, v1.title, v1.notes, v1.created_by) == (1, None, "First", "Pilot.", researcher)
    assert (v2.number, v2.parent, v2.created_by) == (2, v1, admin_user)
    assert v1.name == "v1"
    assert str(v2) == "v2"
    assert DatasetArchive.objects.get(version=v2).status == DatasetArchive.Status.NOT_BUILT


@pytest.mark.django_db
def test_only_images_with_a_final_class_are_frozen(cell, case, cut):
    kept = [
        cell("myeloblast", case=case("P-1", site="Seoul"), method="adjudicated", expert_labels=2),
        cell("neutrophil", method="trusted_import", expert_labels=0),
    ]
    cell(None)  # final but unclassifiable
    cell("monocyte", final=False)  # still needs labels
    version = cut()
    entries = {e.sha256: e for e in ManifestEntry.objects.filter(version=version)}
    assert set(entries) == {image.sha256 for image in kept}
    blast = entries[kept[0].sha256]
    assert (blast.label, blast.method, blast.expert_labels, blast.case_id, blast.extension, blast.image_id) == (
        "myeloblast",
        "adjudicated",
        2,
        "P-1",
        "png",
        kept[0].id,
    )
    assert entries[kept[1].sha256].case_id == ""
    assert version.image_count == 2
    assert version.case_count == 1
    assert version.sources == [{"site": "Seoul", "cases": 1, "images": 1}, {"site": "unknown", "cases": 0, "images": 1}]
    assert sum(sum(counts.values()) for counts in version.class_counts.values()) == 2
    assert set(version.class_counts) == {"train", "validation", "test"}


@pytest.mark.django_db
def test_the_taxonomy_agreement_and_datasheet_texts_are_frozen_with_the_version(cell, cut, make_user):
    image = cell("myeloblast")
    first, second = make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)
    Annotation.objects.create(image=image, annotator=first, cell_class=CellClass.objects.get(code="myeloblast"))
    Annotation.objects.create(image=image, annotator=second, cell_class=CellClass.objects.get(code="lymphoblast"))
    version = cut()
    assert [c["code"] for c in version.taxonomy] == list(CellClass.objects.values_list("code", flat=True))
    assert version.taxonomy[0] == {
        "code": "neutrophil",
        "name": "Neutrophil",
        "group": "normal",
        "order": 1,
        "is_active": True,
    }
    assert version.agreement["images_with_two_labels"] == 1
    assert version.agreement["observed_agreement"] == 0.0
    settings_row = ReleaseSettings.objects.get()
    assert version.description == settings_row.description
    assert len(settings_row.split_key) == 64


@pytest.mark.django_db
def test_nothing_to_freeze_is_refused(cell, cut):
    cell(None)
    cell("monocyte", final=False)
    with pytest.raises(ReleaseEmpty):
        cut()
    assert not DatasetVersion.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.ADJUDICATOR, None])
def test_only_researchers_and_admins_may_cut(role, cell, make_user):
    cell("neutrophil")
    with pytest.raises(PermissionDenied):
        dataset_version_create(created_by=make_user(role))
    assert not DatasetVersion.objects.exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_versions_cut_at_the_same_moment_get_distinct_consecutive_numbers(cell, researcher):
    for label in ["neutrophil", "monocyte", "myeloblast", "lymphoblast"] * 5:
        cell(label)
    start = threading.Barrier(6)
    errors: list[str] = []

    def cut_one() -> None:
        try:
            start.wait()
            dataset_version_create(created_by=researcher)
        except Exception as exc:  # noqa: BLE001 - any failure must fail the test, with its reason
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=cut_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    versions = list(DatasetVersion.objects.order_by("number"))
    assert [v.number for v in versions] == [1, 2, 3, 4, 5, 6]
    assert [v.parent_id for v in versions] == [None] + [v.pk for v in versions[:-1]]
    splits = [dict(ManifestEntry.objects.filter(version=v).values_list("sha256", "split")) for v in versions]
    assert all(s == splits[0] for s in splits), "every concurrent cut reuses the first one's splits"
    assert all(v.image_count == 20 for v in versions)

"""A version never changes: after corrections, imports and taxonomy edits its manifest and archive bytes are the
same, and the diff to the next version shows exactly what changed."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.storage import default_storage

from annotation.models import CellClass
from annotation.services.consensus import consensus_resolve, label_reopen
from releases.models import DatasetArchive, DatasetVersion, ManifestEntry
from releases.selectors import version_diff
from tests.helpers import zip_members

pytestmark = pytest.mark.django_db

MANIFEST_FIELDS = ("sha256", "extension", "label", "method", "expert_labels", "case_id", "split")


def _manifest(version: DatasetVersion) -> list[tuple]:
    return list(ManifestEntry.objects.filter(version=version).order_by("sha256").values_list(*MANIFEST_FIELDS))


def test_later_changes_leave_v1_untouched_and_the_diff_shows_exactly_them(
    cell, case, cut, admin_user, adjudicator, archive_bytes, build
):
    patients = [case(f"P-{i}") for i in range(6)]
    images = [cell(["myeloblast", "lymphoblast", "neutrophil"][i % 3], case=patients[i % 6]) for i in range(24)]
    v1 = cut(title="Submitted")
    archive = build(v1)
    with default_storage.open(archive.file_name, "rb") as stored:
        v1_bytes = stored.read()
    v1_manifest, v1_taxonomy, v1_counts = _manifest(v1), v1.taxonomy, v1.class_counts

    # An adjudicator corrects one final label (re-open, then resolve: the real correction path) ...
    corrected = images[0]
    label_reopen(image_id=corrected.id, actor=admin_user, reason="Auer rods missed")
    consensus_resolve(
        image_id=corrected.id, adjudicator=adjudicator, cell_class=CellClass.objects.get(code="lymphoblast")
    )
    # ... another image is re-opened and ends unclassifiable (it leaves the data set) ...
    dropped = images[1]
    label_reopen(image_id=dropped.id, actor=admin_user, reason="smudge cell")
    consensus_resolve(image_id=dropped.id, adjudicator=adjudicator, cell_class=None)
    # ... new images arrive, and an admin edits the taxonomy.
    added = [cell("monocyte", case=patients[0]), cell("monocyte"), cell("neutrophil", case=case("P-new"))]
    CellClass.objects.filter(code="myeloblast").update(name="Blast (myeloid)", is_active=False)
    v2 = cut()

    v1.refresh_from_db()
    assert _manifest(v1) == v1_manifest
    assert (v1.taxonomy, v1.class_counts) == (v1_taxonomy, v1_counts)
    assert archive_bytes(v1) == v1_bytes
    assert "Blast (myeloid)" not in zip_members(v1_bytes)["taxonomy.json"].decode()
    assert "Blast (myeloid)" in zip_members(archive_bytes(v2))["taxonomy.json"].decode()

    diff = version_diff(old=v1, new=v2)
    assert {(c.sha256, c.change, c.old_label, c.new_label) for c in diff.changes} == {
        (corrected.sha256, "relabeled", "myeloblast", "lymphoblast"),
        (dropped.sha256, "removed", images[1].final_label.code, ""),
        *((image.sha256, "added", "", image.final_label.code) for image in added),
    }
    assert (diff.added, diff.removed, diff.relabeled, diff.unchanged) == (3, 1, 1, 22)
    assert diff.relabel_pairs == [("myeloblast", "lymphoblast", 1)]
    per_class = {row.code: row for row in diff.per_class}
    assert (per_class["monocyte"].added, per_class["neutrophil"].added) == (2, 1)
    assert (per_class["myeloblast"].relabeled_away, per_class["lymphoblast"].relabeled_to) == (1, 1)
    assert per_class[images[1].final_label.code].removed == 1

    # The corrected image stays in the split of its case: a relabel never moves an image between splits.
    split_of = {
        version: dict(ManifestEntry.objects.filter(version=version).values_list("sha256", "split"))
        for version in (v1, v2)
    }
    assert split_of[v2][corrected.sha256] == split_of[v1][corrected.sha256]
    assert hashlib.sha256(v1_bytes).hexdigest() == DatasetArchive.objects.get(version=v1).sha256


def test_the_diff_of_a_version_with_itself_is_empty(cell, cut):
    for label in ["neutrophil", "monocyte"]:
        cell(label)
    version = cut()
    diff = version_diff(old=version, new=version)
    assert (diff.added, diff.removed, diff.relabeled, diff.unchanged, diff.changes) == (0, 0, 0, 2, [])

"""The import_cells and load_demo management commands, run in-process like an admin would."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from annotation.models import CellImage, ImportBatch
from tests.helpers import folder_write, image_bytes, zip_write

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_import_cells_imports_a_folder_and_prints_the_report(admin_user, media, tmp_path):
    source = folder_write(
        tmp_path / "slide7",
        {"neutrophil/a.jpg": image_bytes(seed=1), "monocyte/b.jpg": image_bytes(seed=2), "notes.jpg": b"not an image"},
    )

    output = run("import_cells", str(source), "--user", admin_user.username)

    batch = ImportBatch.objects.get()
    assert (batch.status, batch.source_name, batch.requested_by, batch.imported, batch.rejected) == (
        "succeeded",
        "slide7",
        admin_user,
        2,
        1,
    )
    assert f"Import #{batch.pk} of {source} as {admin_user.username}" in output
    assert "3/3 files: 2 imported, 0 duplicates, 1 rejected" in output
    assert f"Import #{batch.pk} succeeded: 3 files, 2 imported, 0 duplicates, 1 rejected, 0 skipped" in output
    assert "rejected: notes.jpg: not a JPEG, PNG, BMP or TIFF image" in output
    assert set(CellImage.objects.values_list("reference_label__code", flat=True)) == {"neutrophil", "monocyte"}


def test_import_cells_reads_a_zip_with_csv_and_trusted_flag_as_the_first_admin(admin_user, media, tmp_path):
    source = zip_write(tmp_path / "cells.zip", {"P-1/a.jpg": image_bytes(seed=1)})
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text("file,reference_label\nP-1/a.jpg,basophil\n")

    run("import_cells", str(source), "--csv", str(csv_path), "--case-from-folder", "--trusted")

    image = CellImage.objects.get()
    assert (image.case.code, image.final_label.code, image.final_method) == ("P-1", "basophil", "trusted_import")
    assert image.batch.requested_by == admin_user


@pytest.mark.parametrize(
    ("text", "message"),
    [(None, "missing.zip does not exist."), ("plain text", "missing.zip is neither a folder nor a zip archive.")],
)
def test_import_cells_exits_non_zero_for_an_invalid_source(admin_user, media, tmp_path, text, message):
    source = tmp_path / "missing.zip"
    if text is not None:
        source.write_text(text)
    with pytest.raises(CommandError, match=message):
        run("import_cells", str(source))
    assert not ImportBatch.objects.exists()


def test_import_cells_exits_non_zero_when_the_archive_fails(admin_user, media, tmp_path, settings):
    settings.HEMALOOP_IMPORT_MAX_ENTRIES = 1
    source = zip_write(tmp_path / "two.zip", {"a.jpg": image_bytes(seed=1), "b.jpg": image_bytes(seed=2)})

    with pytest.raises(CommandError, match="the archive has 2 entries, more than the limit of 1"):
        run("import_cells", str(source))
    assert ImportBatch.objects.get().status == "failed"


def test_import_cells_needs_an_admin_and_creates_none(annotator, media, tmp_path):
    source = folder_write(tmp_path / "src", {"a.jpg": image_bytes(seed=1)})
    with pytest.raises(CommandError, match="No admin user exists"):
        run("import_cells", str(source))
    with pytest.raises(CommandError, match="Only admins may import images"):
        run("import_cells", str(source), "--user", annotator.username)
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run("import_cells", str(source), "--user", "ghost")
    assert not ImportBatch.objects.exists()


def test_load_demo_imports_a_third_of_each_class_trusted_and_the_rest_untrusted_once(admin_user, media):
    first = run("load_demo")

    trusted = ImportBatch.objects.get(source_name="demo-trusted")
    untrusted = ImportBatch.objects.get(source_name="demo")
    assert (trusted.status, trusted.trusted, untrusted.status, untrusted.trusted) == (
        "succeeded",
        True,
        "succeeded",
        False,
    )
    assert (trusted.imported + untrusted.imported, trusted.rejected + untrusted.rejected) == (180, 0)
    assert "imported" in first
    final = CellImage.objects.filter(final_label__isnull=False)
    assert set(final.values_list("batch", flat=True)) == {trusted.pk}
    assert final.count() == trusted.imported
    assert 55 <= trusted.imported <= 65  # a third of every class
    for cell in CellImage.objects.all():
        assert cell.reference_label_id is not None
        if cell.final_label_id is not None:
            assert cell.final_label_id == cell.reference_label_id
    assert len(set(final.values_list("final_label", flat=True))) == 9
    assert CellImage.objects.exclude(case=None).count() == 180

    second = run("load_demo")

    assert second.strip() == "demo already loaded"
    assert ImportBatch.objects.count() == 2
    assert CellImage.objects.count() == 180

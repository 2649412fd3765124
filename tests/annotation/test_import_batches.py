"""Whole batches: real images, labels and cases, duplicates, archive limits, progress, uploads, failures."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError, connection
from PIL import Image

from annotation.models import Case, CellImage, ImportBatch, ImportItem, LabelEvent
from annotation.services.imports import items
from annotation.services.imports.batches import ImportRejected, import_batch_create, import_batch_create_from_upload
from annotation.services.imports.runner import import_batch_process, import_order
from annotation.services.sources import SourceEntry, _zip_entry_count
from annotation.tasks import import_batch_process as import_batch_process_task
from core.jobs import JobStatus
from tests.helpers import folder_write, image_bytes, zip_write

pytestmark = pytest.mark.django_db

HEADER = "file,case_id,diagnosis,analyzer_class,reference_label\n"


def reasons(batch: ImportBatch) -> dict[str, str]:
    return dict(batch.items.filter(outcome=ImportItem.Outcome.REJECTED).values_list("name", "reason"))


def test_demo_sample_imports_with_true_sizes_hashes_labels_and_cases(run_import, demo_dir, media):
    batch = run_import(demo_dir, csv_path=demo_dir / "cases.csv")

    sources = sorted(path for path in demo_dir.rglob("*.jpg"))
    assert len(sources) == 180
    assert (batch.status, batch.error) == ("succeeded", "")
    assert (batch.total, batch.done, batch.imported, batch.duplicates, batch.rejected) == (180, 180, 180, 0, 0)
    assert batch.skipped == 2  # NOTICE.md and cases.csv
    images = {image.original_name: image for image in CellImage.objects.select_related("reference_label", "case")}
    for source in sources:
        data = source.read_bytes()
        image = images[source.name]
        with Image.open(source) as pil:
            assert (image.width, image.height, image.format) == (*pil.size, "JPEG")
        assert image.sha256 == hashlib.sha256(data).hexdigest()
        assert image.file == f"images/{image.sha256[:2]}/{image.sha256}.jpg"
        assert (media / image.file).read_bytes() == data
        assert image.size_bytes == len(data)
        assert image.reference_label.code == source.parent.name
        assert (image.final_label, image.final_method) == (None, "")
        with Image.open(media / image.thumbnail) as thumb:
            assert thumb.format == "JPEG"
            assert max(thumb.size) == 128
    assert Case.objects.count() == 12
    assert dict(Case.objects.values_list("code", "diagnosis"))["DEMO-002"] == "ALL"
    assert CellImage.objects.filter(case__code="DEMO-001").count() == 15


@pytest.mark.parametrize("trusted", [True, False])
def test_only_a_trusted_batch_turns_reference_labels_into_final_labels(run_import, tmp_path, trusted):
    source = folder_write(
        tmp_path / "src",
        {"neutrophil/a.jpg": image_bytes(seed=1), "monocyte/b.jpg": image_bytes(seed=2), "c.jpg": image_bytes(seed=3)},
    )

    batch = run_import(source, trusted=trusted)

    assert batch.trusted is trusted
    rows = CellImage.objects.values_list(
        "original_name", "reference_label__code", "final_label__code", "final_method", "label_status"
    )
    if trusted:
        expected = {
            ("a.jpg", "neutrophil", "neutrophil", "trusted_import", "final"),
            ("b.jpg", "monocyte", "monocyte", "trusted_import", "final"),
            ("c.jpg", None, None, "", "needs_labels"),
        }
        events = LabelEvent.objects.values_list("image__original_name", "kind", "cell_class__code", "actor")
        assert set(events) == {
            ("a.jpg", "trusted_import", "neutrophil", batch.requested_by_id),
            ("b.jpg", "trusted_import", "monocyte", batch.requested_by_id),
        }
        assert CellImage.objects.filter(final_label__isnull=False, finalized_at__isnull=False).count() == 2
    else:
        expected = {
            ("a.jpg", "neutrophil", None, "", "needs_labels"),
            ("b.jpg", "monocyte", None, "", "needs_labels"),
            ("c.jpg", None, None, "", "needs_labels"),
        }
        assert not LabelEvent.objects.exists()
    assert set(rows) == expected


@pytest.mark.parametrize(
    ("image_format", "mode", "extension"),
    [
        ("PNG", "RGBA", "png"),
        ("PNG", "I;16", "png"),
        ("PNG", "P", "png"),
        ("BMP", "RGB", "bmp"),
        ("TIFF", "CMYK", "tif"),
        ("JPEG", "L", "jpg"),
    ],
)
def test_every_accepted_format_and_mode_is_stored_with_a_jpeg_thumbnail(
    run_import, media, tmp_path, image_format, mode, extension
):
    pixels = Image.open(io.BytesIO(image_bytes(seed=5, size=(300, 200)))).convert("RGBA")
    if mode == "I;16":
        picture = Image.frombytes("I;16", (300, 200), bytes(range(256)) * 468 + bytes(192))
    elif mode == "P":
        picture = pixels.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
        picture.info["transparency"] = 0
    else:
        picture = pixels.convert(mode)
    out = io.BytesIO()
    picture.save(out, format=image_format)

    run_import(folder_write(tmp_path / "src", {f"cell.{extension}": out.getvalue()}))

    image = CellImage.objects.get()
    assert (image.format, image.width, image.height) == (image_format, 300, 200)
    assert image.file.endswith(f".{extension}")
    assert (media / image.file).read_bytes() == out.getvalue()
    with Image.open(media / image.thumbnail) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (128, 85))
        assert thumb.mode in ("RGB", "L")


def test_duplicates_within_a_batch_and_against_an_earlier_batch_are_reported_not_stored(
    run_import, stored_files, tmp_path
):
    same = image_bytes(seed=1)
    first = run_import(folder_write(tmp_path / "one", {"a.jpg": same, "copy_of_a.jpg": same}))
    original = CellImage.objects.get()
    files_after_first = stored_files()
    assert files_after_first == {original.file, original.thumbnail}  # the copy staged nothing that stayed

    second = run_import(folder_write(tmp_path / "two", {"again.jpg": same, "new.jpg": image_bytes(seed=2)}))

    assert (first.imported, first.duplicates) == (1, 1)
    assert (second.imported, second.duplicates) == (1, 1)
    # Files are imported in a shuffled order: whichever of the two came first is the original.
    copy_name = ({"a.jpg", "copy_of_a.jpg"} - {original.original_name}).pop()
    within = first.items.get(name=copy_name)
    across = second.items.get(name="again.jpg")
    for item in (within, across):
        assert (item.outcome, item.image_id) == ("duplicate", original.id)
        assert item.reason.startswith(
            f"same content as image #{original.id} ({original.original_name}, batch #{first.id})"
        )
    assert CellImage.objects.count() == 2
    assert len(stored_files()) == len(files_after_first) + 2  # only new.jpg and its thumbnail


def test_image_folder_with_an_unknown_label_folder_rejects_those_files(run_import, tmp_path):
    source = folder_write(
        tmp_path / "src",
        {
            "neutrophil/a.jpg": image_bytes(seed=1),
            "blasts/b.jpg": image_bytes(seed=2),
            "Band Neutrophil/c.jpg": image_bytes(seed=3),
        },
    )

    batch = run_import(source)

    assert reasons(batch)["blasts/b.jpg"].startswith("folder 'blasts' is not a cell class code (expected one of:")
    assert set(CellImage.objects.values_list("reference_label__code", flat=True)) == {"neutrophil", "band_neutrophil"}


def test_a_zipped_flat_folder_is_a_wrapper_not_a_label(run_import, tmp_path):
    files = {"export/a.jpg": image_bytes(seed=1), "export/b.jpg": image_bytes(seed=2)}
    source = zip_write(tmp_path / "export.zip", files)

    batch = run_import(source)

    assert (batch.imported, batch.rejected) == (2, 0)
    assert not CellImage.objects.filter(reference_label__isnull=False).exists()


def test_csv_with_unknown_labels_and_missing_files_rejects_those_rows(run_import, tmp_path):
    source = folder_write(tmp_path / "src", {f"{n}.jpg": image_bytes(seed=n) for n in range(1, 5)})
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(
        HEADER
        + "1.jpg,P-1,AML,myeloblast,myeloblast\n"
        + "2.jpg,P-1,,,blast_cell\n"
        + "3.jpg,P-2,,smudge,\n"
        + "4.jpg,P-3,CML,,\n"
        + "missing.jpg,P-4,,,neutrophil\n"
    )

    batch = run_import(source, csv_path=csv_path)

    assert reasons(batch) == {
        "2.jpg": "unknown reference_label 'blast_cell' on CSV line 3",
        "3.jpg": "unknown analyzer_class 'smudge' on CSV line 4",
        "4.jpg": "unknown diagnosis 'CML' on CSV line 5 (expected AML, ALL, IG or other)",
        "missing.jpg": "listed on CSV line 6 but not found in the source",
    }
    image = CellImage.objects.get()
    assert (image.original_name, image.case.code, image.case.diagnosis) == ("1.jpg", "P-1", "AML")
    assert (image.analyzer_class.code, image.reference_label.code) == ("myeloblast", "myeloblast")
    assert (batch.total, batch.done, batch.imported, batch.rejected) == (5, 5, 1, 4)
    assert not Case.objects.filter(code__in=["P-2", "P-3", "P-4"]).exists()


def test_csv_rows_match_by_trailing_path_and_ambiguous_rows_are_rejected(run_import, tmp_path):
    source = zip_write(
        tmp_path / "slides.zip",
        {
            "export/neutrophil/a.jpg": image_bytes(seed=1),
            "export/monocyte/a.jpg": image_bytes(seed=2),
            "export/neutrophil/b.jpg": image_bytes(seed=3),
            "export/neutrophil/c.jpg": image_bytes(seed=4),
        },
    )
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(HEADER + "a.jpg,P-1,,,\nneutrophil/b.jpg,P-2,,,\nc.jpg,P-3,,,\nc.jpg,P-4,,,\n")

    batch = run_import(source, csv_path=csv_path)

    ambiguous = "CSV line 2 (a.jpg) matches several files; give the path inside the upload"
    assert reasons(batch) == {
        "export/neutrophil/a.jpg": ambiguous,
        "export/monocyte/a.jpg": ambiguous,
        "export/neutrophil/c.jpg": "listed more than once in the CSV (lines 4, 5)",
    }
    image = CellImage.objects.get()
    assert (image.original_name, image.case.code, image.reference_label.code) == ("b.jpg", "P-2", "neutrophil")


def test_csv_cells_that_look_like_formulas_are_stored_verbatim(run_import, tmp_path):
    formulas = ['=HYPERLINK("http://evil.example","x")', "+1+2", "-3", "@SUM(A1:A2)"]
    source = folder_write(tmp_path / "src", {f"{n}.jpg": image_bytes(seed=n) for n in range(5)})
    csv_path = tmp_path / "meta.csv"
    lines = [HEADER.strip()] + [f'{n}.jpg,"{code.replace(chr(34), 2 * chr(34))}",,,' for n, code in enumerate(formulas)]
    csv_path.write_text("\n".join(lines) + "\n4.jpg,P-5,,,=1+1\n")

    batch = run_import(source, csv_path=csv_path)

    assert sorted(Case.objects.values_list("code", flat=True)) == sorted(formulas)
    assert reasons(batch) == {"4.jpg": "unknown reference_label '=1+1' on CSV line 6"}


def test_semicolon_separated_csv_is_read(run_import, tmp_path):
    source = folder_write(tmp_path / "src", {"a.jpg": image_bytes(seed=1)})
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text("file;case_id;reference_label\r\na.jpg;P-1;Band neutrophil\r\n", encoding="utf-8-sig")

    run_import(source, csv_path=csv_path)

    assert CellImage.objects.values_list("case__code", "reference_label__code").get() == ("P-1", "band_neutrophil")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"name,label\na.jpg,x\n", "the CSV header must name the columns"),
        (b"file,case_id\n\xff\xfe.jpg,P\n", "the CSV is not UTF-8 text"),
    ],
)
def test_csv_that_cannot_be_read_is_refused_up_front_and_fails_a_queued_batch(
    admin_user, media, tmp_path, content, error
):
    source = folder_write(tmp_path / "src", {"a.jpg": image_bytes(seed=1)})
    csv_path = tmp_path / "meta.csv"
    csv_path.write_bytes(content)
    with pytest.raises(ImportRejected, match=f"The CSV cannot be used: {error}"):
        import_batch_create(created_by=admin_user, source=source, source_name="src", csv_path=csv_path)
    assert not ImportBatch.objects.exists()

    # A CSV that goes bad after the batch was queued fails the batch when it runs.
    csv_path.write_text("file\na.jpg\n")
    batch = import_batch_create(
        created_by=admin_user, source=source, source_name="src", csv_path=csv_path, enqueue=False
    )
    csv_path.write_bytes(content)
    batch = import_batch_process(batch=batch)

    assert batch.status == "failed"
    assert error in batch.error
    assert not CellImage.objects.exists()


def test_diagnosis_may_fill_a_case_but_not_contradict_it(run_import, tmp_path):
    Case.objects.create(code="P-9", diagnosis="ALL")
    source = folder_write(tmp_path / "src", {f"{n}.jpg": image_bytes(seed=n) for n in range(3)})
    csv_path = tmp_path / "meta.csv"
    csv_path.write_text(HEADER + "0.jpg,P-9,AML,,\n1.jpg,P-10,,,\n2.jpg,P-10,ig,,\n")

    batch = run_import(source, csv_path=csv_path)

    assert reasons(batch) == {"0.jpg": "case 'P-9' has diagnosis ALL, but the CSV gives AML"}
    assert Case.objects.get(code="P-10").diagnosis == "IG"
    assert Case.objects.get(code="P-9").diagnosis == "ALL"


def test_case_from_folder_uses_the_parent_folder_as_case_id(run_import, tmp_path):
    source = zip_write(
        tmp_path / "cases.zip",
        {
            "slides/P-1/a.jpg": image_bytes(seed=1),
            "slides/P-2/b.jpg": image_bytes(seed=2),
            "c.jpg": image_bytes(seed=3),
        },
    )

    run_import(source, case_from_folder=True)

    assert set(CellImage.objects.values_list("original_name", "case__code", "reference_label")) == {
        ("a.jpg", "P-1", None),
        ("b.jpg", "P-2", None),
        ("c.jpg", None, None),
    }


def test_zip_over_the_entry_limit_fails_the_whole_batch(run_import, stored_files, tmp_path, settings):
    settings.HEMALOOP_IMPORT_MAX_ENTRIES = 3
    source = zip_write(tmp_path / "many.zip", {f"{n}.jpg": image_bytes(seed=n) for n in range(4)})

    batch = run_import(source)

    assert batch.status == "failed"
    assert batch.error == "The whole import was rejected: the archive has 4 entries, more than the limit of 3."
    assert not batch.items.exists()
    assert not CellImage.objects.exists()
    assert stored_files() == set()


def test_zip64_entry_count_is_read_from_the_zip64_record(tmp_path, monkeypatch):
    # Make zipfile write zip64 end records from 3 entries on, as it does past 65,535 in real life.
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    path = zip_write(tmp_path / "z64.zip", {f"{n}.txt": b"x" for n in range(5)})
    monkeypatch.undo()
    with path.open("rb") as fp:
        assert _zip_entry_count(fp) == 5
    assert zipfile.ZipFile(path).testzip() is None


def test_zip_expanding_past_the_total_size_limit_fails_the_batch(run_import, tmp_path, settings):
    settings.HEMALOOP_IMPORT_MAX_TOTAL_BYTES = 1_000
    source = zip_write(tmp_path / "big.zip", {"a.jpg": image_bytes(seed=1, size=(30, 30))})
    assert zipfile.ZipFile(source).infolist()[0].file_size > 1_000

    batch = run_import(source)

    assert batch.status == "failed"
    assert batch.error.startswith("The whole import was rejected: the archive expands to 0.0 MB")
    assert not CellImage.objects.exists()


def test_not_a_zip_and_corrupt_zip_are_refused(run_import, admin_user, tmp_path):
    text = tmp_path / "cells.zip"
    text.write_text("not a zip")
    with pytest.raises(ImportRejected, match="neither a folder nor a zip archive"):
        run_import(text)
    with pytest.raises(ImportRejected, match="does not exist"):
        run_import(tmp_path / "nowhere")


def test_progress_is_saved_every_n_files_while_the_batch_runs(admin_user, media, tmp_path, settings):
    settings.HEMALOOP_IMPORT_PROGRESS_EVERY = 2
    source = folder_write(tmp_path / "src", {f"{n}.jpg": image_bytes(seed=n) for n in range(5)})
    batch = import_batch_create(created_by=admin_user, source=source, source_name="src", enqueue=False)
    seen = []

    def record(_batch: ImportBatch) -> None:
        row = ImportBatch.objects.get(pk=batch.pk)  # what a progress page polling the row would read
        seen.append((row.status, row.total, row.done))

    import_batch_process(batch=batch, on_progress=record)

    assert seen == [("running", 5, 0), ("running", 5, 2), ("running", 5, 4), ("succeeded", 5, 5)]


def _disk_full_on_b_s_report_row(execute, sql, params, many, context):
    """A database wrapper (Django's public seam for every query): writing b.jpg's 'imported' row fails."""
    if sql.startswith('INSERT INTO "annotation_importitem"') and {"b.jpg", ImportItem.Outcome.IMPORTED} <= set(params):
        raise DatabaseError("disk full")
    return execute(sql, params, many, context)


def test_a_failed_database_write_rejects_the_file_and_removes_what_it_wrote(run_import, stored_files, tmp_path):
    source = folder_write(tmp_path / "src", {f"{name}.jpg": image_bytes(seed=n) for n, name in enumerate("abc")})

    with connection.execute_wrapper(_disk_full_on_b_s_report_row):
        batch = run_import(source)

    assert reasons(batch) == {"b.jpg": "database error: disk full"}
    assert sorted(CellImage.objects.values_list("original_name", flat=True)) == ["a.jpg", "c.jpg"]
    expected = {name for image in CellImage.objects.all() for name in (image.file, image.thumbnail)}
    assert stored_files() == expected
    assert not list((tmp_path / "media").rglob(".tmp-*"))


def test_same_bytes_committed_by_a_concurrent_batch_become_a_duplicate(run_import, stored_files, tmp_path, monkeypatch):
    data = image_bytes(seed=1)
    earlier = run_import(folder_write(tmp_path / "one", {"a.jpg": data}))
    original = CellImage.objects.get()
    files_before = stored_files()
    # The other batch commits between this batch's duplicate lookup and its insert.
    monkeypatch.setattr(items, "images_by_hash", lambda hashes: {})

    batch = run_import(folder_write(tmp_path / "two", {"b.jpg": data}))

    item = batch.items.get()
    assert (item.outcome, item.image_id, batch.duplicates) == ("duplicate", original.id, 1)
    assert earlier.items.get().outcome == "imported"
    assert stored_files() == files_before  # the earlier batch's files untouched, no staged file left


def _raise_after_two_files(error: BaseException):
    """An on_progress callback (reporting after every file) that raises once two files are in while running."""

    def on_progress(batch: ImportBatch) -> None:
        if batch.status == JobStatus.RUNNING and batch.done == 2:
            raise error

    return on_progress


def test_an_internal_error_fails_the_batch_and_leaves_no_staged_files(admin_user, stored_files, tmp_path, settings):
    settings.HEMALOOP_IMPORT_WORKERS = 2  # files are staged on threads ahead of the database writes
    settings.HEMALOOP_IMPORT_PROGRESS_EVERY = 1
    # More files than one duplicate-lookup chunk, so some are staged beyond the chunk that fails.
    source = folder_write(tmp_path / "src", {f"{n:02d}.jpg": image_bytes(seed=n, size=(8, 8)) for n in range(40)})
    batch = import_batch_create(created_by=admin_user, source=source, source_name="src", enqueue=False)

    with pytest.raises(RuntimeError, match="bug"):
        import_batch_process(batch=batch, on_progress=_raise_after_two_files(RuntimeError("bug")))

    batch = ImportBatch.objects.get()
    assert batch.status == "failed"
    assert batch.error == "The import stopped on an internal error: RuntimeError('bug')"
    assert (batch.imported, batch.done) == (2, 2)
    expected = {name for image in CellImage.objects.all() for name in (image.file, image.thumbnail)}
    assert len(expected) == 4
    assert stored_files() == expected


def test_a_storage_error_on_a_decoding_thread_fails_the_batch_and_leaves_no_staged_files(
    run_import, stored_files, tmp_path, monkeypatch, settings
):
    settings.HEMALOOP_IMPORT_WORKERS = 2
    real = items.blob_stage
    calls = []

    def disk_full_on_fifth(**kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(**kwargs)

    monkeypatch.setattr(items, "blob_stage", disk_full_on_fifth)
    source = folder_write(tmp_path / "src", {f"{n:02d}.jpg": image_bytes(seed=n, size=(8, 8)) for n in range(40)})

    with pytest.raises(OSError, match="No space left"):
        run_import(source)

    batch = ImportBatch.objects.get()
    assert batch.status == "failed"
    assert "No space left on device" in batch.error
    expected = {name for image in CellImage.objects.all() for name in (image.file, image.thumbnail)}
    assert stored_files() == expected


def _upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/zip")


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_upload_is_queued_on_commit_processed_by_the_task_and_then_deleted(
    admin_user, media, django_capture_on_commit_callbacks
):
    upload = _upload("cells.zip", _zip_bytes({"neutrophil/a.jpg": image_bytes(seed=1), "b.jpg": image_bytes(seed=2)}))
    csv_upload = SimpleUploadedFile("meta.csv", (HEADER + "b.jpg,P-1,other,,\n").encode())

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        batch = import_batch_create_from_upload(created_by=admin_user, upload=upload, csv_upload=csv_upload)
        assert batch.status == "queued"
        # A name in the file storage, not a path: the worker that imports it may share no disk with the web server.
        assert batch.source_path.startswith("uploads/")
        assert default_storage.open(batch.source_path).read()[:2] == b"PK"
        assert batch.csv_path.startswith("uploads/")

    assert len(callbacks) == 1
    batch.refresh_from_db()
    assert (batch.status, batch.source_name, batch.imported) == ("succeeded", "cells.zip", 2)
    assert CellImage.objects.get(original_name="b.jpg").case.code == "P-1"
    assert list((media / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("cells.zip", b"%PDF-1.7 not a zip", "cells.zip is not a zip archive."),
        ("big.zip", _zip_bytes({"a.jpg": b"x" * 5000}), "The upload is 0.0 MB, larger than the limit of 0.0 MB."),
    ],
)
def test_bad_upload_is_refused_and_nothing_is_kept(admin_user, media, settings, name, data, message):
    settings.HEMALOOP_MAX_UPLOAD_BYTES = 1000

    with pytest.raises(ImportRejected) as refused:
        import_batch_create_from_upload(created_by=admin_user, upload=_upload(name, data))

    assert str(refused.value) == message
    assert not ImportBatch.objects.exists()
    assert not (media / "uploads").exists() or not list((media / "uploads").iterdir())


def test_upload_with_an_unusable_csv_is_refused_and_both_files_removed(admin_user, media):
    upload = _upload("cells.zip", _zip_bytes({"a.jpg": image_bytes(seed=1)}))
    csv_upload = SimpleUploadedFile("meta.csv", b"filename,label\na.jpg,x\n")

    with pytest.raises(ImportRejected, match="The CSV cannot be used: the CSV header must name the columns"):
        import_batch_create_from_upload(created_by=admin_user, upload=upload, csv_upload=csv_upload)

    assert not (media / "uploads").exists() or list((media / "uploads").iterdir()) == []
    assert not ImportBatch.objects.exists()


def test_only_admins_may_import(annotator, media, tmp_path):
    with pytest.raises(PermissionDenied):
        import_batch_create_from_upload(created_by=annotator, upload=_upload("c.zip", _zip_bytes({"a.jpg": b"1"})))
    with pytest.raises(PermissionDenied):
        import_batch_create(created_by=annotator, source=tmp_path, source_name="x", enqueue=False)


def test_task_skips_a_batch_that_is_already_finished_or_gone(admin_user, run_import, tmp_path):
    batch = run_import(folder_write(tmp_path / "src", {"a.jpg": image_bytes(seed=1)}))

    assert import_batch_process_task.delay(batch.pk).get() == "succeeded"
    assert batch.items.count() == 1
    assert import_batch_process_task.delay(batch.pk + 1000).get() == "missing"


def test_import_works_on_a_non_filesystem_storage(run_import, tmp_path, settings):
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    data = image_bytes(seed=1)

    run_import(folder_write(tmp_path / "src", {"a.jpg": data}))

    image = CellImage.objects.get()
    with default_storage.open(image.file, "rb") as stored:
        assert stored.read() == data
    assert default_storage.exists(image.thumbnail)
    assert not (tmp_path / "media").exists()


def test_demo_copy_is_a_stratified_sample_with_attribution(demo_dir):
    labels = sorted(path.name for path in demo_dir.iterdir() if path.is_dir())
    assert len(labels) == 9
    assert all(len(list((demo_dir / label).glob("*.jpg"))) == 20 for label in labels)
    notice = (demo_dir / "NOTICE.md").read_text()
    for part in ("Acevedo A.", "Data in Brief 30 (2020) 105474", "doi:10.17632/snkd93bnjr.1", "CC BY 4.0"):
        assert part in notice


def _class_runs(labels: list[str]) -> int:
    return sum(1 for index, label in enumerate(labels) if index == 0 or label != labels[index - 1])


def test_ids_do_not_follow_the_class_folders(admin_user, tmp_path):
    classes = ("neutrophil", "lymphocyte", "monocyte", "eosinophil")
    source = folder_write(
        tmp_path / "src",
        {
            f"{code}/{n:02d}.png": image_bytes(seed=k * 100 + n, image_format="PNG")
            for k, code in enumerate(classes)
            for n in range(10)
        },
    )
    batch = import_batch_create(created_by=admin_user, source=source, source_name="src", enqueue=False)
    assert (
        batch.order_seed
        != import_batch_create(created_by=admin_user, source=source, source_name="again", enqueue=False).order_seed
    )  # a fresh secret per batch
    ImportBatch.objects.filter(pk=batch.pk).update(order_seed=20261201)  # fixed, so the test is deterministic
    batch.refresh_from_db()

    batch = import_batch_process(batch=batch)

    assert batch.imported == 40
    labels = list(CellImage.objects.filter(batch=batch).order_by("id").values_list("reference_label__code", flat=True))
    assert sorted(labels) == sorted(c for c in classes for _ in range(10))
    # Sorted order gives 4 runs; a random order of 4 x 10 gives about 31.
    assert _class_runs(labels) > 20
    # The report follows the same order, one line per file.
    report = list(batch.items.order_by("id").values_list("image__reference_label__code", flat=True))
    assert report == labels


def test_a_batch_imports_in_the_same_order_every_time_it_runs(admin_user, tmp_path):
    source = folder_write(tmp_path / "src", {"neutrophil/a.png": image_bytes(seed=1, image_format="PNG")})
    batch = import_batch_create(created_by=admin_user, source=source, source_name="src", enqueue=False)
    batch.order_seed = 20261201
    entries = [SourceEntry(name=f"neutrophil/{n:02d}.png", size=0) for n in range(12)]
    first = [entry.name for entry in import_order(batch=batch, entries=entries)]
    assert first == [entry.name for entry in import_order(batch=batch, entries=list(reversed(entries)))]
    assert first != sorted(first)


def test_an_upload_queued_while_redis_is_down_fails_at_once_with_the_reason(
    admin_user, media, broker_unreachable, django_capture_on_commit_callbacks
):
    upload = _upload("cells.zip", _zip_bytes({"neutrophil/a.jpg": image_bytes(seed=1)}))
    with django_capture_on_commit_callbacks(execute=True):
        batch = import_batch_create_from_upload(created_by=admin_user, upload=upload)
    batch.refresh_from_db()
    # Not left "queued" for a worker that never heard of it; the upload stays, as for any failed import.
    assert batch.status == "failed"
    assert batch.error.startswith("Could not reach the task queue")
    assert default_storage.exists(batch.source_path)

"""The archive: deterministic bytes, checksums that verify, an ImageFolder torchvision loads, safe CSV, datasheet."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from releases.models import DatasetArchive, ManifestEntry
from releases.services.archive import ArchiveError, archive_build, manifest_csv_cell
from releases.services.archive_request import archive_build_start
from releases.services.versions import release_settings_get
from tests.helpers import zip_members

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(cell, case, cut):
    """A version of 30 images in 8 cases plus 6 without a case, three classes, two sites."""
    cases = [case(f"P-{i:03d}", site="Seoul" if i % 2 else "Busan") for i in range(8)]
    labels = ["myeloblast", "lymphoblast", "neutrophil"]
    for i in range(30):
        cell(labels[i % 3], case=cases[i % 8], method="adjudicated" if i % 5 == 0 else "agreement")
    for i in range(6):
        cell(labels[i % 3], method="trusted_import", expert_labels=0)
    return cut(title="Paper")


def test_the_same_version_always_gives_the_same_bytes(version, archive_bytes):
    first = archive_bytes(version)
    assert archive_bytes(version) == first


def test_members_are_in_a_fixed_order_with_fixed_dates_modes_and_no_compression(version, archive_bytes):
    with zipfile.ZipFile(io.BytesIO(archive_bytes(version))) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names[:4] == ["DATASHEET.md", "taxonomy.json", "manifest.csv", "manifest.jsonl"]
    assert names[-1] == "SHA256SUMS"
    images = names[4:-1]
    assert len(images) == 36
    assert images == sorted(images, key=lambda name: name.encode()), "images in byte order of their paths"
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.compress_type == zipfile.ZIP_STORED
        assert stat.S_IMODE(info.external_attr >> 16) == 0o644
        assert stat.S_ISREG(info.external_attr >> 16)


def test_imagefolder_layout_matches_the_manifest(version, archive_bytes):
    members = zip_members(archive_bytes(version))
    entries = ManifestEntry.objects.filter(version=version)
    expected = {f"images/{e.split}/{e.label}/{e.sha256}.png" for e in entries}
    assert {name for name in members if name.startswith("images/")} == expected
    for entry in entries:
        data = members[f"images/{entry.split}/{entry.label}/{entry.sha256}.png"]
        assert hashlib.sha256(data).hexdigest() == entry.sha256


def test_sha256sums_verifies_every_member(version, archive_bytes):
    members = zip_members(archive_bytes(version))
    sums = {}
    for line in members["SHA256SUMS"].decode().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    assert set(sums) == set(members) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(members[name]).hexdigest() == digest, name


def test_torchvision_imagefolder_loads_each_split(version, archive_bytes, tmp_path):
    from torchvision.datasets import ImageFolder

    with zipfile.ZipFile(io.BytesIO(archive_bytes(version))) as archive:
        archive.extractall(tmp_path / "out")
    total = 0
    for split, counts in version.class_counts.items():
        if not counts:
            continue
        dataset = ImageFolder(str(tmp_path / "out" / "images" / split))
        assert dataset.classes == sorted(counts)
        assert len(dataset) == sum(counts.values())
        image, target = dataset[0]
        assert image.size == (96, 96)
        assert dataset.classes[target] in counts
        total += len(dataset)
    assert total == version.image_count == 36


def test_manifests_list_every_image_with_its_provenance(version, archive_bytes):
    members = zip_members(archive_bytes(version))
    rows = list(csv.DictReader(io.StringIO(members["manifest.csv"].decode())))
    jsonl = [json.loads(line) for line in members["manifest.jsonl"].decode().splitlines()]
    assert len(rows) == len(jsonl) == 36
    assert [row["path"] for row in rows] == [row["path"] for row in jsonl]
    by_sha = {row["sha256"]: row for row in jsonl}
    trusted = [row for row in jsonl if row["label_method"] == "trusted_import"]
    assert len(trusted) == 6
    assert all(row["expert_labels"] == 0 and row["case_id"] == "" for row in trusted)
    for entry in ManifestEntry.objects.filter(version=version):
        row = by_sha[entry.sha256]
        assert (row["split"], row["label"], row["case_id"]) == (entry.split, entry.label, entry.case_id)
    taxonomy = json.loads(members["taxonomy.json"])
    assert taxonomy["version"] == "v1"
    assert [c["code"] for c in taxonomy["classes"]][:2] == ["neutrophil", "band_neutrophil"]


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_escaped(cell, case, cut, archive_bytes):
    codes = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain"]
    for code in codes:
        cell("neutrophil", case=case(code))
    members = zip_members(archive_bytes(cut()))
    csv_cases = {row["case_id"] for row in csv.DictReader(io.StringIO(members["manifest.csv"].decode(), newline=""))}
    assert csv_cases == {"'" + code for code in codes[:-1]} | {"plain"}
    json_cases = {json.loads(line)["case_id"] for line in members["manifest.jsonl"].decode().splitlines()}
    assert json_cases == set(codes), "JSON is data, not a spreadsheet: values stay as they are"
    assert manifest_csv_cell(12) == "12"


def test_datasheet_describes_counts_labeling_agreement_sources_licence_and_limitations(
    cell, case, cut, archive_bytes, make_user
):
    from annotation.models import Annotation, CellClass

    config = release_settings_get()
    config.licence = "CC BY 4.0"
    config.citation = "Kim et al. (2026), HemaLoop white cells."
    config.limitations = "Only one analyzer model (Sysmex DI-60)."
    config.save()
    site_case = case("P-1", site="Seoul National University Hospital")
    images = [cell("myeloblast", case=site_case) for _ in range(3)] + [cell("neutrophil") for _ in range(2)]
    first, second = make_user(), make_user()
    blast = CellClass.objects.get(code="myeloblast")
    for image in images[:2]:
        Annotation.objects.create(image=image, annotator=first, cell_class=blast)
        Annotation.objects.create(image=image, annotator=second, cell_class=blast)
    version = cut(title="Paper", notes="For the AML/ALL paper.")
    config.licence = "changed after the cut"
    config.save()

    sheet = zip_members(archive_bytes(version))["DATASHEET.md"].decode()
    assert sheet.startswith("# HemaLoop dataset v1: Paper\n")
    assert "For the AML/ALL paper." in sheet
    assert "| Licence | CC BY 4.0 |" in sheet
    assert "changed after the cut" not in sheet
    assert "Kim et al. (2026), HemaLoop white cells." in sheet
    assert "two hematology experts" in sheet
    assert "Over all 2 images with two expert labels at freeze time" in sheet
    assert "Cohen's kappa" in sheet
    assert "| Seoul National University Hospital | 1 | 3 |" in sheet
    assert "| unknown | 0 | 2 |" in sheet
    assert "Only one analyzer model (Sysmex DI-60)." in sheet
    assert "No images of: " in sheet
    assert "Band neutrophil" in sheet
    assert "0 cases in more than one split" in sheet
    counts = version.class_counts
    row = next(line for line in sheet.splitlines() if line.startswith("| Myeloblast |"))
    assert row.endswith("| 3 |")
    assert all(f"{counts[s].get('myeloblast', 0)} (" in row for s in counts)


def test_build_publishes_the_file_and_its_sha256(
    version, researcher, archive_bytes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        archive_build_start(version=version, requested_by=researcher)
    archive = DatasetArchive.objects.get(version=version)
    assert archive.status == DatasetArchive.Status.SUCCEEDED
    with default_storage.open(archive.file_name, "rb") as stored:
        data = stored.read()
    assert hashlib.sha256(data).hexdigest() == archive.sha256
    assert archive.size_bytes == len(data)
    assert archive.done == archive.total == 36 + 5
    assert data == archive_bytes(version)
    assert archive.file_name == "releases/hemaloop-dataset-v1.zip"
    leftovers = [p.name for p in Path(default_storage.path("releases")).iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_a_lost_file_is_rebuilt_to_the_published_bytes(version, researcher, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        archive_build_start(version=version, requested_by=researcher)
    archive = DatasetArchive.objects.get(version=version)
    published = archive.sha256
    default_storage.delete(archive.file_name)
    with django_capture_on_commit_callbacks(execute=True):
        archive_build_start(version=version, requested_by=researcher)
    archive.refresh_from_db()
    assert archive.status == DatasetArchive.Status.SUCCEEDED
    assert archive.sha256 == published
    with default_storage.open(archive.file_name, "rb") as stored:
        assert hashlib.sha256(stored.read()).hexdigest() == published


def test_a_rebuild_that_differs_from_the_published_sha256_fails_and_keeps_the_published_value(version, build):
    DatasetArchive.objects.filter(version=version).update(sha256="0" * 64)
    archive = build(version)
    assert archive.status == DatasetArchive.Status.FAILED
    assert "not the published" in archive.error
    archive.refresh_from_db()
    assert archive.sha256 == "0" * 64
    assert not default_storage.exists("releases/hemaloop-dataset-v1.zip")


def test_a_stored_image_whose_bytes_changed_fails_the_build(version, archive_bytes, build):
    entry = ManifestEntry.objects.filter(version=version).select_related("image").first()
    Path(default_storage.path(entry.image.file)).write_bytes(b"tampered")
    archive = build(version)
    assert archive.status == DatasetArchive.Status.FAILED
    assert entry.sha256 in archive.error
    assert "no longer has the SHA-256" in archive.error
    with pytest.raises(ArchiveError):
        archive_bytes(version)
    assert not [p for p in Path(default_storage.path("releases")).iterdir()], "no temporary file left behind"


def test_a_missing_image_file_fails_the_build_with_its_name(version, build):
    entry = ManifestEntry.objects.filter(version=version).select_related("image").first()
    default_storage.delete(entry.image.file)
    archive = build(version)
    assert archive.status == DatasetArchive.Status.FAILED
    assert "missing from storage" in archive.error
    assert entry.sha256 in archive.error


def test_a_queued_or_built_archive_is_not_queued_twice(version, researcher, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        archive_build_start(version=version, requested_by=researcher)
        archive_build_start(version=version, requested_by=researcher)
    assert len(callbacks) == 1
    archive = archive_build(archive_id=DatasetArchive.objects.get(version=version).pk)
    assert archive.status == DatasetArchive.Status.SUCCEEDED
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        archive_build_start(version=version, requested_by=researcher)
    assert callbacks == []


def test_annotators_cannot_start_a_build(version, annotator):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        archive_build_start(version=version, requested_by=annotator)


ARCHIVE = "releases.services.archive"
ZIPSTREAM = "releases.services.zipstream"


@pytest.mark.parametrize(
    "sizes",
    [
        {
            f"{ZIPSTREAM}.SPILL_BYTES": 300,
            f"{ARCHIVE}.COMMIT_STEP": 1,
            f"{ARCHIVE}.PREFETCH_MAX_FILE": 500,
            f"{ARCHIVE}.CHUNK": 256,
        },
        {
            f"{ZIPSTREAM}.SPILL_BYTES": 50_000,
            f"{ARCHIVE}.COMMIT_STEP": 10**9,
            f"{ARCHIVE}.IMAGES_PER_READ": 1,
            f"{ARCHIVE}.PREFETCH_BYTES": 1000,
        },
        {f"{ZIPSTREAM}.CENTRAL_DIRECTORY_BLOCK": 4},
    ],
    ids=[
        "members spilled, images streamed in pieces",
        "one commit at the end, little read-ahead",
        "central directory spooled",
    ],
)
def test_the_bytes_do_not_depend_on_buffer_sizes(version, archive_bytes, monkeypatch, sizes):
    """Spilling a member to disk before zipfile fills in its header, streaming images in small pieces instead
    of reading them ahead, committing rarely, keeping the central directory in a temporary file: none may
    change a byte."""
    expected = archive_bytes(version)
    for name, value in sizes.items():
        monkeypatch.setattr(name, value)
    assert archive_bytes(version) == expected


def test_images_read_through_the_storage_api_give_the_same_bytes(version, archive_bytes, monkeypatch):
    expected = archive_bytes(version)

    class NotALocalDisk:
        pass

    # Only a local disk is read by path and ahead; pretend the storage is something else (an object store).
    monkeypatch.setattr("releases.services.archive.FileSystemStorage", NotALocalDisk)
    assert archive_bytes(version) == expected

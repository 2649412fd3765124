"""Reads for dataset versions: lists, manifests, class balance, the leakage check, diffs and archive progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Collate
from django.shortcuts import get_object_or_404

from annotation.models import CellImage, LabelStatus, NearDuplicate
from core.jobs import job_progress
from releases import conf
from releases.models import DatasetArchive, DatasetVersion, ManifestEntry, Split

SPLIT_ORDER = (Split.TRAIN, Split.VALIDATION, Split.TEST)
SHARED_CASES_SHOWN = 20
ROWS_PER_QUERY = 1000


def version_list() -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.select_related("created_by", "parent", "archive").order_by("-number")


def version_get(*, number: int) -> DatasetVersion:
    return get_object_or_404(version_list(), number=number)


def version_latest() -> DatasetVersion | None:
    return version_list().first()


def manifest_entries(*, version: DatasetVersion, split: str | None = None) -> QuerySet[ManifestEntry]:
    """A version's rows in archive order: split, label, SHA-256, compared byte by byte.

    The "C" collation keeps the order independent of the database's locale, which can change
    between operating-system releases; the archive bytes depend on this order.
    """
    entries = ManifestEntry.objects.filter(version=version)
    if split:
        entries = entries.filter(split=split)
    return entries.order_by(Collate("split", "C"), Collate("label", "C"), Collate("sha256", "C"))


# --- what a version holds ------------------------------------------------------------------------


@dataclass(frozen=True)
class BalanceRow:
    code: str
    name: str
    counts: dict[str, int]
    shares: dict[str, float]  # of the split's images, in percent
    total: int
    test_share: float  # of the class's images that are in test, in percent


@dataclass(frozen=True)
class Balance:
    rows: list[BalanceRow]
    totals: dict[str, int]
    total: int


def version_balance(*, version: DatasetVersion) -> Balance:
    """Images per class and split, from the counts frozen with the version, in taxonomy order."""
    counts = version.class_counts
    totals = {split: sum(counts.get(split, {}).values()) for split in SPLIT_ORDER}
    names = {entry["code"]: entry["name"] for entry in version.taxonomy}
    codes = [entry["code"] for entry in version.taxonomy]
    codes += sorted({code for split in counts.values() for code in split} - set(codes))
    rows = []
    for code in codes:
        per_split = {split: counts.get(split, {}).get(code, 0) for split in SPLIT_ORDER}
        total = sum(per_split.values())
        if not total:
            continue
        rows.append(
            BalanceRow(
                code=code,
                name=names.get(code, code),
                counts=per_split,
                total=total,
                shares={split: _percent(per_split[split], totals[split]) for split in SPLIT_ORDER},
                test_share=_percent(per_split[Split.TEST], total),
            )
        )
    return Balance(rows=rows, totals=totals, total=sum(totals.values()))


@dataclass(frozen=True)
class NearDuplicateAcross:
    """A near-duplicate pair (annotation.models.NearDuplicate) of this version whose cells are in different splits."""

    sha256: str
    split: str
    other_sha256: str
    other_split: str
    similarity: float


@dataclass(frozen=True)
class Leakage:
    cases_in_several_splits: int
    shared_cases: list[str]
    earlier_test_in_training: int  # images of this version outside test whose case or image was in an earlier test set
    near_duplicates_across_splits: int = 0
    near_duplicate_pairs: list[NearDuplicateAcross] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.cases_in_several_splits or self.earlier_test_in_training or self.near_duplicates_across_splits)


def version_leakage(*, version: DatasetVersion) -> Leakage:
    """Cases that appear in two splits of this version (must be none), and test material of earlier
    versions that this version puts in train or validation (must be none)."""
    entries = ManifestEntry.objects.filter(version=version)
    shared = (
        entries.exclude(case_id="")
        .values("case_id")
        .annotate(splits=Count("split", distinct=True))
        .filter(splits__gt=1)
        .order_by("case_id")
        .values_list("case_id", flat=True)
    )
    earlier_test = ManifestEntry.objects.filter(version__number__lt=version.number, split=Split.TEST)
    leaked = entries.exclude(split=Split.TEST).filter(
        Q(sha256__in=earlier_test.values("sha256")) | Q(case_id__in=earlier_test.exclude(case_id="").values("case_id"))
    )
    across = _near_duplicates_across_splits(entries=entries)
    return Leakage(
        cases_in_several_splits=shared.count(),
        shared_cases=list(shared[:SHARED_CASES_SHOWN]),
        earlier_test_in_training=leaked.count(),
        near_duplicates_across_splits=across.count(),
        near_duplicate_pairs=[
            NearDuplicateAcross(
                sha256=pair.image.sha256,
                split=pair.split,
                other_sha256=pair.duplicate_of.sha256,
                other_split=pair.other_split,
                similarity=pair.similarity,
            )
            for pair in across.select_related("image", "duplicate_of")[:SHARED_CASES_SHOWN]
        ],
    )


def _near_duplicates_across_splits(*, entries: QuerySet[ManifestEntry]) -> QuerySet[NearDuplicate]:
    """Near-duplicate pairs with both cells in the version (matched by SHA-256, which the manifest freezes) and in two
    different splits: the same cell imaged twice would be trained on and tested on. Pairs are found after import, so
    a version cut earlier is checked against what is known now."""

    def split_of(image_field: str) -> Subquery:
        return Subquery(entries.filter(sha256=OuterRef(f"{image_field}__sha256")).values("split")[:1])

    return (
        NearDuplicate.objects.annotate(split=split_of("image"), other_split=split_of("duplicate_of"))
        .filter(split__isnull=False, other_split__isnull=False)
        .exclude(split=F("other_split"))
        .order_by("-similarity", "id")
    )


@dataclass(frozen=True)
class LabelSummary:
    methods: dict[str, int]  # images per way the final label was decided
    expert_labels: dict[int, int]  # images per number of expert labels
    without_case: int


def version_label_summary(*, version: DatasetVersion) -> LabelSummary:
    """How the labels of a version were decided, and how many of its images have no case."""
    entries = ManifestEntry.objects.filter(version=version)
    return LabelSummary(
        methods=dict(entries.values_list("method").annotate(n=Count("id")).order_by("method")),
        expert_labels=dict(entries.values_list("expert_labels").annotate(n=Count("id")).order_by("expert_labels")),
        without_case=entries.filter(case_id="").count(),
    )


@dataclass(frozen=True)
class ReleasePreview:
    """What cutting a version now would freeze."""

    images: int
    per_class: list[tuple[str, int]]
    latest: DatasetVersion | None
    test_fraction: float
    validation_fraction: float


def release_preview() -> ReleasePreview:
    final = CellImage.objects.filter(label_status=LabelStatus.FINAL, final_label__isnull=False)
    per_class = list(final.values_list("final_label__name").annotate(n=Count("id")).order_by("final_label__order"))
    return ReleasePreview(
        images=sum(n for _, n in per_class),
        per_class=per_class,
        latest=version_latest(),
        test_fraction=conf.test_fraction(),
        validation_fraction=conf.validation_fraction(),
    )


# --- diffs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffChange:
    sha256: str
    change: str  # added, removed or relabeled
    old_label: str
    new_label: str


@dataclass
class ClassDiff:
    code: str
    added: int = 0
    removed: int = 0
    relabeled_away: int = 0  # images of this class in the old version that have another class in the new one
    relabeled_to: int = 0


@dataclass
class VersionDiff:
    old: DatasetVersion
    new: DatasetVersion
    added: int = 0
    removed: int = 0
    relabeled: int = 0
    unchanged: int = 0
    per_class: list[ClassDiff] = field(default_factory=list)
    relabel_pairs: list[tuple[str, str, int]] = field(default_factory=list)
    changes: list[DiffChange] = field(default_factory=list)


def version_diff(*, old: DatasetVersion, new: DatasetVersion, with_changes: bool = True) -> VersionDiff:
    """Images added, removed and relabeled from `old` to `new`, matched by SHA-256.

    Both manifests are read in SHA-256 order and merged, so memory grows with the listed changes only;
    with_changes=False (the datasheet) keeps the counts and lists nothing.
    """
    diff = VersionDiff(old=old, new=new)
    per_class: dict[str, ClassDiff] = {}
    pairs: Counter[tuple[str, str]] = Counter()

    def count(change: DiffChange) -> None:
        if change.change == "added":
            diff.added += 1
            per_class.setdefault(change.new_label, ClassDiff(code=change.new_label)).added += 1
        elif change.change == "removed":
            diff.removed += 1
            per_class.setdefault(change.old_label, ClassDiff(code=change.old_label)).removed += 1
        else:
            diff.relabeled += 1
            per_class.setdefault(change.old_label, ClassDiff(code=change.old_label)).relabeled_away += 1
            per_class.setdefault(change.new_label, ClassDiff(code=change.new_label)).relabeled_to += 1
            pairs[(change.old_label, change.new_label)] += 1
        if with_changes:
            diff.changes.append(change)

    old_rows, new_rows = _labels_by_sha(version=old), _labels_by_sha(version=new)
    a, b = next(old_rows, None), next(new_rows, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            count(DiffChange(sha256=a[0], change="removed", old_label=a[1], new_label=""))
            a = next(old_rows, None)
        elif a is None or b[0] < a[0]:
            count(DiffChange(sha256=b[0], change="added", old_label="", new_label=b[1]))
            b = next(new_rows, None)
        else:
            if a[1] != b[1]:
                count(DiffChange(sha256=a[0], change="relabeled", old_label=a[1], new_label=b[1]))
            else:
                diff.unchanged += 1
            a, b = next(old_rows, None), next(new_rows, None)
    order = {entry["code"]: index for index, entry in enumerate(new.taxonomy)}
    diff.per_class = sorted(per_class.values(), key=lambda r: (order.get(r.code, len(order)), r.code))
    diff.relabel_pairs = [(o, n, k) for (o, n), k in sorted(pairs.items(), key=lambda p: (-p[1], p[0]))]
    return diff


def _labels_by_sha(*, version: DatasetVersion) -> Iterator[tuple[str, str]]:
    """(SHA-256, label) in byte order of the hash, the order the merge in version_diff compares in."""
    rows = ManifestEntry.objects.filter(version=version).order_by(Collate("sha256", "C"))
    return rows.values_list("sha256", "label").iterator(chunk_size=ROWS_PER_QUERY)


# --- archives ------------------------------------------------------------------------------------


def archive_progress(*, archive: DatasetArchive) -> dict[str, Any]:
    """The one job progress shape (done/total count members), with the version and, once built, the file."""
    built = archive.status == DatasetArchive.Status.SUCCEEDED
    return {
        **job_progress(archive),
        "version": archive.version.number,
        "sha256": archive.sha256 if built else "",
        "size_bytes": archive.size_bytes if built else None,
    }


def archive_file_present(*, archive: DatasetArchive) -> bool:
    """The built file is in storage with the published size (a truncated copy does not count)."""
    if not archive.file_name or archive.size_bytes is None or not default_storage.exists(archive.file_name):
        return False
    return default_storage.size(archive.file_name) == archive.size_bytes


def archive_downloadable(*, archive: DatasetArchive) -> bool:
    built = archive.status == DatasetArchive.Status.SUCCEEDED and bool(archive.sha256)
    return built and archive_file_present(archive=archive)


def _percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0

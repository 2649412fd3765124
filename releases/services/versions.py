"""Cutting a dataset version: every final label frozen into numbered, immutable manifest rows with their splits."""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotation.models import CellClass, CellImage, LabelStatus
from annotation.selectors.agreement import agreement_stats
from annotation.storage import IMAGE_EXTENSIONS
from core.errors import AppError
from core.roles import Role, role_require
from releases import conf
from releases.models import DatasetArchive, DatasetVersion, ManifestEntry, ReleaseSettings, Split, SplitAssignment
from releases.splits import SplitItem, group_key, splits_assign

SPLIT_ORDER = (Split.TRAIN, Split.VALIDATION, Split.TEST)
UNKNOWN_SITE = "unknown"
BULK_BATCH = 2000


class ReleaseEmpty(AppError):
    """No image has a final label yet: there is nothing to freeze."""

    code = "release_empty"


@dataclass(frozen=True)
class _FinalImage:
    image_id: int
    sha256: str
    extension: str
    label: str
    method: str
    expert_labels: int
    case_code: str
    site: str


def release_settings_get() -> ReleaseSettings:
    """The installation's release settings, created with a fresh random split key on first use."""
    row, _ = ReleaseSettings.objects.get_or_create(
        pk=ReleaseSettings.SINGLETON_ID, defaults={"split_key": secrets.token_hex(32)}
    )
    return row


def dataset_version_create(*, created_by: AbstractBaseUser, title: str = "", notes: str = "") -> DatasetVersion:
    """Freeze every image with a final label (unclassifiable ones excluded) into the next version.

    Researchers and admins cut versions from the pages and the API; the training service cuts one
    before every run, so a model is always trained on a frozen version.
    """
    role_require(created_by, Role.RESEARCHER, Role.ADMIN, action="cut dataset versions")
    release_settings_get()
    with transaction.atomic():
        # One cut at a time: the lock serializes the numbering and the remembered splits (the unique
        # version number is only the last line of defence).
        config = ReleaseSettings.objects.select_for_update().get(pk=ReleaseSettings.SINGLETON_ID)
        images = _final_images()
        if not images:
            raise ReleaseEmpty("No image has a final label yet, so there is nothing to put in a dataset version.")
        parent = DatasetVersion.objects.order_by("-number").first()
        number = parent.number + 1 if parent is not None else 1
        groups = {image.sha256: group_key(case_code=image.case_code, sha256=image.sha256) for image in images}
        remembered = dict(SplitAssignment.objects.values_list("group", "split"))
        test_fraction, validation_fraction = conf.test_fraction(), conf.validation_fraction()
        splits = splits_assign(
            items=[SplitItem(group=groups[image.sha256], label=image.label) for image in images],
            remembered=remembered,
            key=bytes.fromhex(config.split_key),
            salt=f"v{number}",
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
        )
        version = DatasetVersion.objects.create(
            number=number,
            title=title.strip(),
            notes=notes.strip(),
            created_by=created_by,
            created_at=timezone.now(),
            parent=parent,
            image_count=len(images),
            case_count=len({image.case_code for image in images if image.case_code}),
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
            taxonomy=_taxonomy_frozen(),
            class_counts=_class_counts(images=images, splits=splits, groups=groups),
            sources=_sources(images=images),
            agreement=_agreement_frozen(),
            description=config.description,
            licence=config.licence,
            citation=config.citation,
            limitations=config.limitations,
        )
        ManifestEntry.objects.bulk_create(
            [
                ManifestEntry(
                    version=version,
                    image_id=image.image_id,
                    sha256=image.sha256,
                    extension=image.extension,
                    label=image.label,
                    method=image.method,
                    expert_labels=image.expert_labels,
                    case_id=image.case_code,
                    split=splits[groups[image.sha256]],
                )
                for image in images
            ],
            batch_size=BULK_BATCH,
        )
        SplitAssignment.objects.bulk_create(
            [
                SplitAssignment(group=group, split=split, first_version=version)
                for group, split in sorted(splits.items())
                if group not in remembered
            ],
            batch_size=BULK_BATCH,
        )
        DatasetArchive.objects.create(version=version)
    return version


def _final_images() -> list[_FinalImage]:
    """Every image with a final class, in SHA-256 order (so the split of a given state is reproducible)."""
    rows = CellImage.objects.filter(label_status=LabelStatus.FINAL, final_label__isnull=False).values_list(
        "id",
        "sha256",
        "format",
        "file",
        "final_label__code",
        "final_method",
        "label_count",
        "case__code",
        "case__site",
    )
    images = [
        _FinalImage(
            image_id=image_id,
            sha256=sha256,
            extension=_extension(image_format=image_format, file_name=file_name),
            label=label,
            method=method,
            expert_labels=label_count,
            case_code=case_code or "",
            site=site or "",
        )
        for image_id, sha256, image_format, file_name, label, method, label_count, case_code, site in rows
    ]
    images.sort(key=lambda image: image.sha256)
    return images


def _extension(*, image_format: str, file_name: str) -> str:
    return IMAGE_EXTENSIONS.get(image_format) or PurePosixPath(file_name).suffix.lstrip(".").lower() or "bin"


def _taxonomy_frozen() -> list[dict]:
    return [
        {"code": c.code, "name": c.name, "group": c.group, "order": c.order, "is_active": c.is_active}
        for c in CellClass.objects.order_by("order")
    ]


def _class_counts(*, images: list[_FinalImage], splits: dict[str, str], groups: dict[str, str]) -> dict:
    """{split: {code: images}} for every split, empty splits included."""
    counts: dict[str, Counter[str]] = {split.value: Counter() for split in SPLIT_ORDER}
    for image in images:
        counts[splits[groups[image.sha256]]][image.label] += 1
    return {split: dict(sorted(counter.items())) for split, counter in counts.items()}


def _sources(*, images: list[_FinalImage]) -> list[dict]:
    """[{site, cases, images}] by site name; images whose case names no site (or that have no case) are 'unknown'."""
    cases: dict[str, set[str]] = defaultdict(set)
    counts: Counter[str] = Counter()
    for image in images:
        site = image.site or UNKNOWN_SITE
        counts[site] += 1
        if image.case_code:
            cases[site].add(image.case_code)
    return [{"site": site, "cases": len(cases[site]), "images": counts[site]} for site in sorted(counts)]


def _agreement_frozen() -> dict:
    stats = agreement_stats()
    return {
        "images_with_two_labels": stats.n_images,
        "kappa": stats.kappa,
        "observed_agreement": stats.observed_agreement,
        "per_class": [
            {"code": row["code"], "images": row["n"], "agreement": row["agreement"]} for row in stats.per_class
        ],
    }

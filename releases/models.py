"""Versioned datasets: frozen manifests, remembered splits, release settings and the archives built from them.

A DatasetVersion and its ManifestEntry rows are written once, when the version is cut, and never
updated: every value an archive needs is copied into them, so later labeling, corrections, imports
or taxonomy edits cannot change what an old version contains. Build state lives apart, in
DatasetArchive, because it does change.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models

from core.jobs import Job, JobStatus


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    TEST = "test", "Test"


class ReleaseSettings(models.Model):
    """One row per installation: datasheet texts an admin edits, and the key that seeds new splits.

    The texts are copied into each version when it is cut, so editing them changes future versions only.
    """

    SINGLETON_ID = 1

    description = models.TextField(
        default="Single-cell images of peripheral-blood white cells, one cell per image, labeled into the "
        "HemaLoop taxonomy of white-cell classes.",
        help_text="What the data is: shown in every new version's DATASHEET.md.",
    )
    licence = models.CharField(max_length=200, blank=True, help_text="e.g. CC BY 4.0")
    citation = models.TextField(blank=True, help_text="How to cite the data set (the version number is added).")
    limitations = models.TextField(blank=True, help_text="Known limitations, added to the datasheet's own list.")
    # A per-installation secret, created on first use: two sites with the same cases get different splits,
    # and nobody can steer a case into a split by choosing its code.
    split_key = models.CharField(max_length=64, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "release settings"
        verbose_name_plural = "release settings"

    def __str__(self) -> str:
        return "Release settings"


class DatasetVersion(models.Model):
    """An immutable, numbered snapshot of every image with a final label (v1, v2, ...)."""

    number = models.PositiveIntegerField(unique=True)
    title = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    image_count = models.PositiveIntegerField()
    case_count = models.PositiveIntegerField(help_text="Distinct cases; images without a case are not counted.")
    test_fraction = models.FloatField()
    validation_fraction = models.FloatField(help_text="Of the images not in test.")
    # Frozen copies: [{code, name, group, order, is_active}], {split: {code: n}}, [{site, cases, images}],
    # and the inter-annotator agreement at freeze time.
    taxonomy = models.JSONField()
    class_counts = models.JSONField()
    sources = models.JSONField()
    agreement = models.JSONField()
    description = models.TextField()
    licence = models.CharField(max_length=200, blank=True)
    citation = models.TextField(blank=True)
    limitations = models.TextField(blank=True)

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"v{self.number}" + (f" {self.title}" if self.title else "")

    @property
    def name(self) -> str:
        return f"v{self.number}"


class ManifestEntry(models.Model):
    """One image of a version, with every value copied at freeze time (none is read live later)."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="entries")
    # Only to find the bytes; PROTECT, because an old version must stay downloadable.
    image = models.ForeignKey("annotation.CellImage", on_delete=models.PROTECT, related_name="+")
    sha256 = models.CharField(max_length=64)
    extension = models.CharField(max_length=8)
    label = models.CharField(max_length=40, help_text="Cell class code at freeze time.")
    method = models.CharField(max_length=20, help_text="agreement, adjudicated or trusted_import")
    expert_labels = models.PositiveSmallIntegerField(help_text="Live expert annotations at freeze time.")
    case_id = models.CharField(max_length=64, blank=True, help_text="Pseudonymous case code; blank if none.")
    split = models.CharField(max_length=10, choices=Split.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "sha256"], name="one_entry_per_image_and_version")]
        indexes = [models.Index(fields=["version", "split", "label"], name="manifest_split_label")]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} {self.split}/{self.label}"

    @property
    def path(self) -> str:
        """The member name in the archive (ImageFolder layout)."""
        return f"images/{self.split}/{self.label}/{self.sha256}.{self.extension}"


class SplitAssignment(models.Model):
    """The split a group (a case, or an image without a case) was given when it first appeared.

    Later versions reuse it, so a case in test stays in test and never leaks into a training set.
    """

    group = models.CharField(max_length=80, unique=True, help_text="case:<code> or image:<sha256>")
    split = models.CharField(max_length=10, choices=Split.choices)
    first_version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="+")

    def __str__(self) -> str:
        return f"{self.group} → {self.split}"


class DatasetArchive(Job):
    """The zip of a version: its build job, and once built its published SHA-256.

    The row exists from the moment the version is cut; "not built" is the state of a row no build was asked
    for yet. done/total count the zip's members.
    """

    class Status(models.TextChoices):
        """JobStatus's values, plus "not built"; the labels are the archive page's words."""

        NOT_BUILT = "not_built", "Not built"
        QUEUED = JobStatus.QUEUED.value, "Queued"
        RUNNING = JobStatus.RUNNING.value, "Building"
        SUCCEEDED = JobStatus.SUCCEEDED.value, "Done"
        FAILED = JobStatus.FAILED.value, "Failed"
        CANCELLED = JobStatus.CANCELLED.value, "Cancelled"

    JOB_KIND = "dataset_archive"
    # The build heartbeats twice a second while it writes members; the longest silent step is copying the
    # finished zip into an object store, which for a large version takes minutes.
    STALE_AFTER = timedelta(minutes=30)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NOT_BUILT)
    version = models.OneToOneField(DatasetVersion, on_delete=models.CASCADE, related_name="archive")
    file_name = models.CharField(max_length=255, blank=True, help_text="Path inside the media storage.")
    # Set by the first successful build and never changed: a rebuild must reproduce it byte for byte.
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Archive {self.pk}: {self.status}"

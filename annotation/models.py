"""Taxonomy, cases, cell images and their import batches."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class CellClass(models.Model):
    """One class of the taxonomy. `code` is stable forever (it is in every dataset manifest)."""

    class Group(models.TextChoices):
        NORMAL = "normal", "Normal"
        IMMATURE = "immature", "Immature"

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    group = models.CharField(max_length=10, choices=Group.choices)
    hotkey = models.CharField(max_length=1, unique=True)
    order = models.PositiveSmallIntegerField(unique=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["order"]
        verbose_name_plural = "cell classes"

    def __str__(self) -> str:
        return self.name


class Case(models.Model):
    """A pseudonymous patient or sample. Never holds directly identifying data."""

    class Diagnosis(models.TextChoices):
        AML = "AML", "Acute myeloid leukemia"
        ALL = "ALL", "Acute lymphoblastic leukemia"
        IG = "IG", "Immature granulocytes"
        OTHER = "other", "Other"

    code = models.CharField(max_length=64, unique=True)
    diagnosis = models.CharField(max_length=8, choices=Diagnosis.choices, blank=True)
    site = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class ImportBatch(models.Model):
    """One upload (zip) or folder import; its items are the per-file report."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    source_name = models.CharField(max_length=255)
    # The uploaded archive (or folder path for the management command) until the task has read it.
    source_path = models.CharField(max_length=1024)
    csv_path = models.CharField(max_length=1024, blank=True, help_text="Metadata CSV on local disk, if any.")
    # Uploads live under MEDIA_ROOT/uploads and are deleted after a successful run; folders are never touched.
    source_is_upload = models.BooleanField(default=False)
    trusted = models.BooleanField(default=False, help_text="Reference labels become final labels.")
    case_from_folder = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    # Companion files (README, NOTICE, CSV, hidden files) that are not images and are not reported per file.
    skipped = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Import #{self.pk} {self.source_name}"


class CellImage(models.Model):
    """A single-cell image, stored content-addressed by SHA-256 of its bytes."""

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.CharField(max_length=255, help_text="Path inside the media storage.")
    thumbnail = models.CharField(max_length=255, blank=True)
    format = models.CharField(max_length=8)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    original_name = models.CharField(max_length=255)
    case = models.ForeignKey(Case, null=True, blank=True, on_delete=models.PROTECT, related_name="images")
    batch = models.ForeignKey(ImportBatch, on_delete=models.PROTECT, related_name="images")
    # What the analyzer (e.g. Sysmex DI-60) said; hidden from annotators by default.
    analyzer_class = models.ForeignKey(CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # A label that came with the import: kept apart from expert annotations, never shown to annotators.
    reference_label = models.ForeignKey(CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Set by consensus, or by a trusted import (final_method = "trusted_import").
    final_label = models.ForeignKey(CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    final_method = models.CharField(max_length=20, blank=True)
    priority = models.FloatField(default=0.0, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.original_name})"


class ImportItem(models.Model):
    """The outcome of one file of a batch: imported, duplicate (of which image) or rejected (why)."""

    class Outcome(models.TextChoices):
        IMPORTED = "imported", "Imported"
        DUPLICATE = "duplicate", "Duplicate"
        REJECTED = "rejected", "Rejected"

    batch = models.ForeignKey(ImportBatch, on_delete=models.CASCADE, related_name="items")
    name = models.CharField(max_length=1024)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.TextField(blank=True)
    image = models.ForeignKey(CellImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name}: {self.outcome}"

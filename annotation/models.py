"""Taxonomy, cases, cell images and their import batches."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models

from core.jobs import Job


class LabelStatus(models.TextChoices):
    """Where an image stands in the labeling loop; kept on CellImage so the queue query is one index scan."""

    NEEDS_LABELS = "needs_labels", "Needs labels"
    CONSENSUS = "consensus", "In consensus"
    FINAL = "final", "Final"


class FinalMethod(models.TextChoices):
    """How an image got its final label; blank while it has none. Dataset manifests keep the value."""

    AGREEMENT = "agreement", "By agreement"
    ADJUDICATED = "adjudicated", "Adjudicated"
    TRUSTED_IMPORT = "trusted_import", "Trusted import"


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


def import_order_seed() -> int:
    """A fresh secret seed for the order a batch's files are imported in (see ImportBatch.order_seed)."""
    return secrets.randbits(63)


class ImportBatch(Job):
    """One upload (zip) or folder import; its items are the per-file report. `done` counts the files reported."""

    JOB_KIND = "import"
    # Heartbeats come between files (at least every few seconds of work); no single file takes minutes,
    # so a running batch silent this long lost its worker.
    STALE_AFTER = timedelta(minutes=15)

    source_name = models.CharField(max_length=255)
    # The uploaded archive (or folder path for the management command) until the task has read it.
    source_path = models.CharField(max_length=1024)
    csv_path = models.CharField(max_length=1024, blank=True, help_text="Metadata CSV on local disk, if any.")
    # Uploads are names in the file storage (uploads/), deleted after a successful run; folders are never touched.
    source_is_upload = models.BooleanField(default=False)
    trusted = models.BooleanField(default=False, help_text="Reference labels become final labels.")
    case_from_folder = models.BooleanField(default=False)
    imported = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    # Companion files (README, NOTICE, CSV, hidden files) that are not images and are not reported per file.
    skipped = models.PositiveIntegerField(default=0)
    # Files are imported in an order shuffled by this seed, so database ids do not follow the folders (analyzers
    # sort their exports by pre-class) and annotators cannot read a class off the ids. Kept on the row so a resumed
    # run sees the same order.
    order_seed = models.BigIntegerField(default=import_order_seed, editable=False)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"Import #{self.pk} {self.source_name}"


def cell_public_id() -> str:
    """A fresh random public id for a cell (see CellImage.public_id): 128 bits, URL-safe, 22 characters."""
    return secrets.token_urlsafe(16)


class CellImage(models.Model):
    """A single-cell image, stored content-addressed by SHA-256 of its bytes."""

    # What annotators know the cell by, on every route they can call: random, so it says nothing about the import
    # order, the class folders or the file (database ids are sequential and the SHA-256 finds public data sets).
    public_id = models.CharField(max_length=32, unique=True, default=cell_public_id, editable=False)
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
    # Set by agreement, by an adjudicator, or by a trusted import (final_method says which).
    final_label = models.ForeignKey(CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    final_method = models.CharField(max_length=20, blank=True, choices=FinalMethod.choices)
    finalized_at = models.DateTimeField(null=True, blank=True)
    label_status = models.CharField(max_length=14, choices=LabelStatus.choices, default=LabelStatus.NEEDS_LABELS)
    # Live (not undone) expert labels; changed only under the image's row lock (annotation.services.labeling).
    label_count = models.PositiveSmallIntegerField(default=0)
    # Set by active learning; higher comes first in the labeling queue.
    priority = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The labeling queue's order, over the images that still need labels only.
            models.Index(
                "label_status",
                models.F("priority").desc(),
                models.F("label_count").desc(),
                "id",
                name="labeling_queue_order",
            ),
            models.Index(fields=["label_status", "final_label"], name="image_status_final"),
        ]

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


class ImageFileProblem(models.Model):
    """A cell whose stored file could not be served, recorded once when first seen so admins can restore it."""

    class Reason(models.TextChoices):
        MISSING = "missing", "File missing from storage"
        UNREADABLE = "unreadable", "File cannot be read"

    image = models.OneToOneField(CellImage, on_delete=models.CASCADE, related_name="file_problem")
    reason = models.CharField(max_length=10, choices=Reason.choices)
    path = models.CharField(max_length=255, help_text="The storage path that failed.")
    detail = models.TextField(blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-detected_at", "-id"]

    def __str__(self) -> str:
        return f"image {self.image_id}: {self.reason}"


# --- Labeling: double-blind labels, leases, skips, consensus history ---------------------------


class Annotation(models.Model):
    """One expert's blind label of one image. Never updated except to mark it undone or flagged (append-only)."""

    image = models.ForeignKey(CellImage, on_delete=models.PROTECT, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")
    # NULL cell_class means "unclassifiable" (artefact, smudge, damaged cell): a real outcome.
    cell_class = models.ForeignKey(CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time the annotator spent on it.")
    undone_at = models.DateTimeField(null=True, blank=True)
    # Its annotator asked an adjudicator to look again (too late to undo); the cell's decision goes to consensus.
    flagged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # The last line of defence against a double submit: one live label per image and annotator.
            models.UniqueConstraint(
                fields=["image", "annotator"],
                condition=models.Q(undone_at__isnull=True),
                name="one_live_label_per_image_and_annotator",
            ),
        ]
        indexes = [models.Index(fields=["annotator", "created_at"])]

    def __str__(self) -> str:
        return f"{self.annotator} → {self.cell_class.code if self.cell_class else 'unclassifiable'}"


class Lease(models.Model):
    """An image handed to an annotator by the queue; others skip it until it expires."""

    image = models.ForeignKey(CellImage, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "annotator"], name="one_lease_per_image_and_annotator")]

    def __str__(self) -> str:
        return f"{self.image_id} held by {self.annotator_id} until {self.expires_at:%H:%M:%S}"


class Skip(models.Model):
    """An annotator passed on an image; the queue does not offer it to them again for a while."""

    image = models.ForeignKey(CellImage, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["annotator", "image", "created_at"])]

    def __str__(self) -> str:
        return f"{self.annotator_id} skipped {self.image_id}"


class LabelEvent(models.Model):
    """Append-only history of an image's labels: who decided what, when and why."""

    class Kind(models.TextChoices):
        LABEL = "label", "Labeled"
        UNDO = "undo", "Undid label"
        WITHDRAWN = "withdrawn", "Decision withdrawn (a label was undone)"
        FLAGGED = "flagged", "Label flagged by its annotator"
        AGREEMENT = "agreement", "Final by agreement"
        DISAGREEMENT = "disagreement", "Sent to consensus"
        ADJUDICATED = "adjudicated", "Resolved by adjudicator"
        REOPENED = "reopened", "Re-opened"
        TRUSTED_IMPORT = "trusted_import", "Final from trusted import"

    image = models.ForeignKey(CellImage, on_delete=models.PROTECT, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    cell_class = models.ForeignKey(CellClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.image_id} {self.kind} by {self.actor_id}"


class NearDuplicate(models.Model):
    """Two cells whose index vectors are nearly identical (cosine at least HEMALOOP_NEAR_DUPLICATE_SIMILARITY): most
    likely the same cell imaged or exported twice with different bytes (byte-identical files are caught by SHA-256
    at import). Written by inference after an embedding pass; reported on the import that brought `image`, and
    flagged by a dataset version's leakage check when the two fall in different splits. Never blocks anything."""

    # The later cell (higher id: the one the reporting import brought) and the earlier one it duplicates.
    image = models.ForeignKey(CellImage, on_delete=models.CASCADE, related_name="near_duplicates")
    duplicate_of = models.ForeignKey(CellImage, on_delete=models.CASCADE, related_name="+")
    similarity = models.FloatField(help_text="Cosine similarity of the two index vectors.")
    space_key = models.CharField(max_length=200, help_text="The embedding space that measured it.")
    detected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-similarity", "id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "duplicate_of"], name="one_near_duplicate_per_pair"),
            models.CheckConstraint(condition=models.Q(image__gt=models.F("duplicate_of")), name="near_duplicate_later"),
        ]

    def __str__(self) -> str:
        return f"{self.image_id} ~ {self.duplicate_of_id} ({self.similarity:.3f})"

"""Predictions of a model version on the image pool, the scoring jobs that write them, and the admin's
active-learning settings."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from core.jobs import Job


class Prediction(models.Model):
    """One model version's calibrated ensemble output for one image (rewritten when the pool is scored again)."""

    image = models.ForeignKey("annotation.CellImage", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.CASCADE, related_name="predictions")
    # Calibrated probabilities in the model's class order (the taxonomy order it was trained with).
    probabilities = models.JSONField()
    predicted_class = models.ForeignKey("annotation.CellClass", on_delete=models.PROTECT, related_name="+")
    confidence = models.FloatField(help_text="Top-1 probability.")
    margin = models.FloatField(help_text="Top-1 minus top-2 probability; small means uncertain.")
    entropy = models.FloatField(help_text="Shannon entropy of the probabilities, in nats.")
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="one_prediction_per_image_and_version"),
        ]
        # The selection and the review list read one version's rows, filtered by class or confidence.
        indexes = [models.Index(fields=["model_version", "predicted_class"], name="prediction_version_class")]

    def __str__(self) -> str:
        return f"{self.image_id} → {self.predicted_class_id} ({self.confidence:.2f}) by model {self.model_version_id}"


class ScoringJob(Job):
    """One pass of a model version over the pool: queued by an activation, an import or Rescore, then claimed by
    an inference worker, which reports its progress in images."""

    class Scope(models.TextChoices):
        ALL = "all", "Whole pool"
        MISSING = "missing", "Images without a prediction"

    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.CASCADE, related_name="scoring_jobs")
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.ALL)

    # A worker reports after every chunk of images (seconds apart even on a CPU).
    STALE_AFTER = timedelta(minutes=30)
    JOB_KIND = "scoring"

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"Scoring {self.pk} of model {self.model_version_id} ({self.status} {self.done}/{self.total})"


def _share_positive(value: float) -> None:
    if value <= 0:
        raise ValidationError("Must be more than 0.")


class ActiveLearningSettings(models.Model):
    """The one row of active-learning settings an admin edits (page or Django admin); the queue order reads it.

    Created on first read from the HEMALOOP_AL_* Django settings, which are therefore only initial values.
    """

    SINGLETON_ID = 1

    class Strategy(models.TextChoices):
        MARGIN = "margin", "Margin (top-1 minus top-2 probability)"
        ENTROPY = "entropy", "Entropy"
        LEAST_CONFIDENCE = "least_confidence", "Least confidence"
        RANDOM = "random", "Random"

    class ColdStart(models.TextChoices):
        TYPICAL = "typical", "Typical and diverse cells from the embedding index (TypiClust)"
        STRATIFIED = "stratified", "Stratified random across cases"

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.MARGIN)
    exploration = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of the prioritised images drawn at random, 0 to 1 (0.1 = 10%).",
    )
    max_class_share = models.FloatField(
        default=0.3,
        validators=[_share_positive, MaxValueValidator(1.0)],
        help_text="Most of the prioritised images one predicted class may take, more than 0 and at most 1 (a fully "
        "trained model's queue; a head's queue takes at most one of each group of look-alike cells instead).",
    )
    top_n = models.PositiveIntegerField(
        default=1000,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="How many images get a priority; the rest of the queue follows in import order.",
    )
    cold_start = models.CharField(
        max_length=10,
        choices=ColdStart.choices,
        default=ColdStart.TYPICAL,
        help_text="The queue's order before a head has enough labels per class; the typical cells need the embedding "
        "index of every image that needs labels, and stratified random is used until it has them.",
    )
    review_min_confidence = models.FloatField(
        default=0.9,
        validators=[MinValueValidator(0.5), MaxValueValidator(1.0)],
        help_text="A final label the model contradicts with at least this confidence goes on the review list.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = verbose_name_plural = "active-learning settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="al_settings_single_row"),
            models.CheckConstraint(
                condition=models.Q(exploration__gte=0, exploration__lte=1), name="al_settings_exploration_share"
            ),
            models.CheckConstraint(
                condition=models.Q(max_class_share__gt=0, max_class_share__lte=1), name="al_settings_class_share"
            ),
            models.CheckConstraint(
                condition=models.Q(review_min_confidence__gte=0.5, review_min_confidence__lte=1),
                name="al_settings_review_confidence",
            ),
        ]

    def __str__(self) -> str:
        return "Active-learning settings"


class EmbeddingSpace(models.Model):
    """One backbone's embedding index (training.ml.embedding.BackboneSpec): the bundled ImageNet backbone, or a
    member of a fully trained version. Its vectors live in shards in default storage (EmbeddingShard)."""

    key = models.CharField(
        max_length=200, unique=True, help_text="BackboneSpec.key, e.g. bundled:tf_efficientnet_lite0@224x224"
    )
    backbone = models.JSONField(help_text="BackboneSpec.as_dict()")
    dim = models.PositiveIntegerField(default=0, help_text="Vector length, known once the first shard is written.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.key


class EmbeddingShard(models.Model):
    """One file of float16 vectors with their image ids (training.ml.embedding.shard_bytes), in default storage so it
    is the same on a local disk and on S3-compatible storage; an embedding pass writes one per chunk of images."""

    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="shards")
    # The pass that wrote it: what its near-duplicate check compares (inference.services.neighbours).
    job = models.ForeignKey("EmbeddingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="shards")
    file = models.CharField(max_length=255, help_text="Name in default storage.")
    count = models.PositiveIntegerField()
    # Part of the key of the loaded index a worker keeps (inference.services.index.index_load); empty for shards
    # written before it was recorded.
    sha256 = models.CharField(max_length=64, blank=True, default="", help_text="SHA-256 of the file's bytes.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.file} ({self.count} vectors)"


class Embedding(models.Model):
    """Which shard row holds an image's vector in a space: what finds the images still to embed; loading the index
    reads the shards alone."""

    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey("annotation.CellImage", on_delete=models.CASCADE, related_name="+")
    shard = models.ForeignKey(EmbeddingShard, on_delete=models.CASCADE, related_name="+")
    row = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["space", "image"], name="one_embedding_per_image_and_space")]

    def __str__(self) -> str:
        return f"image {self.image_id} in {self.space_id} (shard {self.shard_id} row {self.row})"


class EmbeddingJob(Job):
    """A batched pass that embeds the images of the pool not yet in a space (the whole pool the first time, then
    each import's new images), on the inference queue; its progress counts images."""

    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="jobs")

    STALE_AFTER = timedelta(minutes=30)
    JOB_KIND = "embedding"

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"Embedding {self.pk} into {self.space_id} ({self.status} {self.done}/{self.total})"


class HeadRefreshJob(Job):
    """One refresh of the queue (inference.services.heads): train a head on the index vectors of all final labels,
    calibrate it, rescore the pool and re-order the queue; queued every HEMALOOP_HEAD_REFRESH_EVERY new final labels
    or by an admin. `outcome` says what it did (the version it registered, or why it skipped)."""

    class Reason(models.TextChoices):
        LABELS = "labels", "New final labels"
        REQUESTED = "requested", "Requested by an admin"
        INDEX = "index", "Index grew"

    reason = models.CharField(max_length=10, choices=Reason.choices)
    space = models.ForeignKey(EmbeddingSpace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model_version = models.ForeignKey(
        "training.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outcome = models.CharField(max_length=300, blank=True)
    # Which branch of training.ml.selection.select_next ordered the queue (blank: the refresh did not re-order it).
    selection = models.CharField(max_length=10, blank=True)

    STALE_AFTER = timedelta(minutes=30)
    JOB_KIND = "head_refresh"

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # Two refreshes would train the same head twice: at most one is queued or running.
            models.UniqueConstraint(
                models.Value(True),
                condition=models.Q(status__in=["queued", "running"]),
                name="one_head_refresh_at_a_time",
            ),
        ]

    def __str__(self) -> str:
        return f"Refresh {self.pk} ({self.status}) {self.outcome}"

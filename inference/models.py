"""Predictions of a model version on the image pool, and the scoring jobs that write them."""
from __future__ import annotations

from django.db import models


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


class ScoringJob(models.Model):
    """One pass of a model version over the pool: its status and live progress, for a page to show."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.CASCADE, related_name="scoring_jobs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"Scoring {self.pk} of model {self.model_version_id} ({self.status} {self.done}/{self.total})"

    @property
    def percent(self) -> int:
        return 100 if not self.total else int(100 * self.done / self.total)

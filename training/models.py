"""Training runs (one retrain of the ensemble on a frozen dataset version) and the model versions they register."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q, Value

from core.jobs import Job, JobStatus


class TrainingRun(Job):
    """One retrain as a background job (core.jobs): done/total count the run's batches over every model and epoch;
    its own fields say what it trains on, where it is (model, epoch, batch), its history and the cancel flag."""

    JOB_KIND = "training"
    LOG_TAIL_CHARS = 8000

    dataset_version = models.ForeignKey("releases.DatasetVersion", on_delete=models.PROTECT, related_name="+")
    profile = models.CharField(max_length=20)
    config = models.JSONField(help_text="The full TrainConfig the run trains with.")
    # training.services.runs.WeightsPlan.to_dict(): where each member's weights come from, decided at the start.
    weights = models.JSONField(default=dict, blank=True)
    worker_host = models.CharField(max_length=200, blank=True)
    # [{model, model_index, epoch, train_loss, val_loss, val_accuracy, val_macro_f1, lr, ...}], one row per epoch.
    history = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(blank=True)
    model_index = models.PositiveSmallIntegerField(default=0)
    model_name = models.CharField(max_length=100, blank=True)
    model_count = models.PositiveSmallIntegerField(default=0)
    epoch = models.PositiveIntegerField(default=0)
    max_epochs = models.PositiveIntegerField(default=0)
    batch = models.PositiveIntegerField(default=0)
    batches_total = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # The database, not the broker, keeps two retrains apart: at most one row may be queued or running.
            # A constant expression: any two rows in the partial index collide, queued or running alike.
            models.UniqueConstraint(
                Value(True), condition=Q(status__in=["queued", "running"]), name="one_training_run_at_a_time"
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status})"

    @classmethod
    def stale_after(cls) -> timedelta:
        return timedelta(minutes=settings.HEMALOOP_TRAINING_HEARTBEAT_MINUTES)

    @property
    def percent(self) -> int:
        # The last batch is not the end: evaluation, plots and registration follow, so 100 % means registered.
        return super().percent if self.status == JobStatus.SUCCEEDED else min(99, super().percent)


class ModelVersion(models.Model):
    """A trained ensemble on disk with its test metrics, or a light head on an embedding index (a refresh of the
    queue, inference.services.heads); exactly one is active (the one inference uses)."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    class Kind(models.TextChoices):
        ENSEMBLE = "ensemble", "Trained ensemble"
        HEAD = "head", "Head on the embedding index"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.ENSEMBLE)
    # A head version has no training run: config["backbone"] names the backbone it reads, config["labels"] what
    # it was trained on.
    run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="model_version"
    )
    out_dir = models.CharField(
        max_length=255,
        help_text="Folder of the ensemble relative to MEDIA_ROOT; for a head, its file's name in default storage.",
    )
    config = models.JSONField()
    temperature = models.FloatField()
    metrics = models.JSONField(help_text="metrics.json as the trainer wrote it.")
    plots = models.JSONField(default=dict, help_text="{plot name: path relative to MEDIA_ROOT}")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="one_active_model_version"),
            models.CheckConstraint(
                condition=Q(kind="head") | Q(run__isnull=False), name="model_version_ensemble_has_run"
            ),
        ]

    def __str__(self) -> str:
        return f"Model {self.pk} ({self.status})"

    @property
    def is_head(self) -> bool:
        return self.kind == self.Kind.HEAD

    @property
    def macro_f1(self) -> float | None:
        """Test macro-F1 of an ensemble; a head's case-grouped cross-validated macro-F1."""
        if self.is_head:
            return self.metrics.get("cv_macro_f1")
        return (self.metrics.get("ensemble") or {}).get("test", {}).get("macro_f1")

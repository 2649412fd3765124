"""Read-only admin views of predictions and scoring jobs (they are written by the scoring service only)."""
from __future__ import annotations

from django.contrib import admin

from config.admin import ReadOnlyAdmin
from inference.models import Prediction, ScoringJob


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("image", "model_version", "predicted_class", "confidence", "margin", "entropy", "created_at")
    list_filter = ("model_version", "predicted_class")
    raw_id_fields = ("image",)


@admin.register(ScoringJob)
class ScoringJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "model_version", "status", "done", "total", "started_at", "finished_at")
    list_filter = ("status",)

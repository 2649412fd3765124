"""Read-only admin views of predictions and scoring jobs (they are written by the scoring service only)."""
from __future__ import annotations

from django.contrib import admin

from inference.models import Prediction, ScoringJob


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Prediction)
class PredictionAdmin(_ReadOnly):
    list_display = ("image", "model_version", "predicted_class", "confidence", "margin", "entropy", "created_at")
    list_filter = ("model_version", "predicted_class")
    raw_id_fields = ("image",)


@admin.register(ScoringJob)
class ScoringJobAdmin(_ReadOnly):
    list_display = ("id", "model_version", "status", "done", "total", "started_at", "finished_at")
    list_filter = ("status",)

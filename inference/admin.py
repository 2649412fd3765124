"""Read-only admin views of predictions and scoring jobs (they are written by the scoring service only), and the
one editable row of active-learning settings."""

from __future__ import annotations

from django.contrib import admin
from django.shortcuts import redirect

from annotation.selectors.blinding import images_hidden_from
from core.admin import ReadOnlyAdmin
from inference.models import ActiveLearningSettings, Prediction, ScoringJob
from inference.selectors import al_settings_get


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("image", "model_version", "predicted_class", "confidence", "margin", "entropy", "created_at")
    list_filter = ("model_version", "predicted_class")
    raw_id_fields = ("image",)

    def get_queryset(self, request):
        # The model's answer on a cell hidden from this admin (they label too) stays hidden here as well.
        return super().get_queryset(request).exclude(image__in=images_hidden_from(user=request.user).values("pk"))


@admin.register(ScoringJob)
class ScoringJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "model_version", "scope", "status", "done", "total", "requested_at", "finished_at")
    list_filter = ("status",)


@admin.register(ActiveLearningSettings)
class ActiveLearningSettingsAdmin(admin.ModelAdmin):
    """A single row: never added or deleted here; the list opens the row itself. The model's validators give the
    form its range errors."""

    fields = (
        "cold_start",
        "strategy",
        "exploration",
        "max_class_share",
        "top_n",
        "review_min_confidence",
        "updated_by",
        "updated_at",
    )
    readonly_fields = ("updated_by", "updated_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        return redirect("admin:inference_activelearningsettings_change", al_settings_get().pk)

    def save_model(self, request, obj, form, change) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)

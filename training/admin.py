"""Read-mostly admin for runs and model versions; state changes go through the services (pages and API)."""

from django.contrib import admin

from training.models import ModelVersion, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "dataset_version", "profile", "requested_by", "requested_at", "finished_at"]
    list_filter = ["status", "profile"]
    readonly_fields = [field.name for field in TrainingRun._meta.fields]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "run", "temperature", "created_at", "activated_at"]
    list_filter = ["status"]
    readonly_fields = [field.name for field in ModelVersion._meta.fields]

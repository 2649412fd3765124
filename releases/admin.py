"""Django admin: the release settings (datasheet texts) are editable; versions and archives are read-only records."""

from django.contrib import admin
from django.http import HttpResponseRedirect
from django.urls import reverse

from core.admin import ReadOnlyAdmin
from releases.models import DatasetArchive, DatasetVersion, ReleaseSettings
from releases.services.versions import release_settings_get


@admin.register(ReleaseSettings)
class ReleaseSettingsAdmin(admin.ModelAdmin):
    """One row per installation; its texts are copied into each version when it is cut."""

    fields = ["description", "licence", "citation", "limitations"]

    def changelist_view(self, request, extra_context=None):
        settings_row = release_settings_get()
        return HttpResponseRedirect(reverse("admin:releases_releasesettings_change", args=[settings_row.pk]))

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ["number", "title", "image_count", "case_count", "created_by", "created_at"]
    search_fields = ["title"]
    exclude = ["taxonomy", "class_counts", "sources", "agreement"]


@admin.register(DatasetArchive)
class DatasetArchiveAdmin(ReadOnlyAdmin):
    list_display = ["version", "status", "sha256", "size_bytes", "finished_at"]
    list_filter = ["status"]

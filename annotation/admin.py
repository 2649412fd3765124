"""Django admin: the taxonomy and cases are editable; imports and images are read-only records."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from annotation.models import Case, CellClass, CellImage, ImportBatch
from annotation.selectors.blinding import images_hidden_from
from core.admin import ReadOnlyAdmin


@admin.register(CellClass)
class CellClassAdmin(admin.ModelAdmin):
    list_display = ["order", "code", "name", "group", "hotkey", "is_active"]
    list_display_links = ["code", "name"]
    list_filter = ["group", "is_active"]
    search_fields = ["code", "name"]

    def get_readonly_fields(self, request, obj=None):
        # The code is in every dataset manifest: renaming it would silently break old releases.
        return ["code"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        # Labels point at classes with PROTECT; deactivate a class instead of deleting it.
        return False


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["code", "diagnosis", "site", "created_at"]
    list_filter = ["diagnosis", "site"]
    search_fields = ["code"]


@admin.register(ImportBatch)
class ImportBatchAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "source_name",
        "requested_by",
        "requested_at",
        "status",
        "total",
        "imported",
        "duplicates",
        "rejected",
        "report",
    ]
    list_filter = ["status", "trusted"]
    search_fields = ["source_name"]
    list_select_related = ["requested_by"]

    @admin.display(description="Report")
    def report(self, obj: ImportBatch) -> str:
        return format_html('<a href="{}">per-file report</a>', reverse("annotation:batch_detail", args=[obj.pk]))


@admin.register(CellImage)
class CellImageAdmin(ReadOnlyAdmin):
    list_display = ["sha_prefix", "original_name", "case", "batch", "reference_label", "final_label", "created_at"]
    list_filter = ["final_label", "reference_label", "batch"]
    search_fields = ["sha256", "original_name", "case__code"]
    list_select_related = ["case", "batch", "reference_label", "final_label"]
    readonly_fields = ["preview"]

    def get_queryset(self, request):
        # An admin who also labels gets no side door to the reference labels of cells hidden from them.
        return super().get_queryset(request).exclude(pk__in=images_hidden_from(user=request.user).values("pk"))

    @admin.display(description="SHA-256", ordering="sha256")
    def sha_prefix(self, obj: CellImage) -> str:
        return obj.sha256[:12]

    @admin.display(description="Image")
    def preview(self, obj: CellImage) -> str:
        return format_html(
            '<a href="{}"><img src="{}" alt="" style="max-width: 200px"></a>',
            reverse("annotation:image_detail", args=[obj.pk]),
            reverse("annotation:image_thumbnail", args=[obj.pk]),
        )

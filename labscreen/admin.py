"""The ICD-10 -> outcome mapping is data an admin edits here; imports and studies are read-only records."""

from django.contrib import admin

from labscreen.models import OutcomeRule


@admin.register(OutcomeRule)
class OutcomeRuleAdmin(admin.ModelAdmin):
    list_display = ("start", "end", "outcome", "note")
    list_filter = ("outcome",)
    search_fields = ("start", "end", "note")

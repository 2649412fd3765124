"""The user admin shows each user's HemaLoop roles (role groups) at a glance and filters by them."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from core.roles import Role

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class HemaLoopUserAdmin(UserAdmin):
    list_display = ["username", "email", "roles", "is_active", "last_login"]
    list_filter = ["groups", "is_active", "is_superuser"]

    @admin.display(description="Roles")
    def roles(self, obj) -> str:
        # From the prefetched groups: user_roles() would query once per row.
        names = {group.name for group in obj.groups.all()}
        held = [role.value for role in Role if role.value in names or (role is Role.ADMIN and obj.is_superuser)]
        return ", ".join(held) or "—"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

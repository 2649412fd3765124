"""The user admin shows each user's HemaLoop roles (role groups) at a glance and filters by them, and revokes API
tokens; the token list shows who holds one, never the keys."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from accounts.services.tokens import token_revoke
from core.admin import ReadOnlyAdmin
from core.roles import Role

User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(TokenProxy)


@admin.register(User)
class HemaLoopUserAdmin(UserAdmin):
    list_display = ["username", "email", "roles", "is_active", "last_login"]
    list_filter = ["groups", "is_active", "is_superuser"]
    actions = ["revoke_api_tokens"]

    @admin.display(description="Roles")
    def roles(self, obj) -> str:
        # From the prefetched groups: user_roles() would query once per row.
        names = {group.name for group in obj.groups.all()}
        held = [role.value for role in Role if role.value in names or (role is Role.ADMIN and obj.is_superuser)]
        return ", ".join(held) or "—"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    @admin.action(description="Revoke the API tokens of the selected users")
    def revoke_api_tokens(self, request, queryset) -> None:
        revoked = [user for user in queryset if token_revoke(user=user, revoked_by=request.user)]
        for user in revoked:
            self.log_change(request, user, "Revoked the API token.")  # in the user's admin history
        self.message_user(request, f"Revoked {len(revoked)} API token{'' if len(revoked) == 1 else 's'}.")


@admin.register(TokenProxy)
class ApiTokenAdmin(ReadOnlyAdmin, TokenAdmin):
    """Who holds an API token, since when; never the key (a key an admin can read is a login as that user that
    leaves no trace, and a token's str() is its key, so there are no detail pages). Revoke with the user list's
    action; tokens are issued only to their owner, by the token endpoint."""

    list_display = ("user", "created")
    list_display_links = None

    def has_view_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_view_permission(request)

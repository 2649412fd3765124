from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate, post_save, pre_save


def _sync_groups(sender, **kwargs) -> None:
    from accounts.services import roles_sync_groups

    roles_sync_groups()


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        # After every migrate, so permissions of newly added models reach the role groups.
        post_migrate.connect(_sync_groups, sender=self)
        from accounts.services.tokens import token_revoke_after_password_change, token_revoke_if_password_changes

        pre_save.connect(token_revoke_if_password_changes, sender=settings.AUTH_USER_MODEL)
        post_save.connect(token_revoke_after_password_change, sender=settings.AUTH_USER_MODEL)

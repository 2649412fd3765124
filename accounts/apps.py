from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_groups(sender, **kwargs) -> None:
    from accounts.services import roles_sync_groups

    roles_sync_groups()


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        # After every migrate, so permissions of newly added models reach the role groups.
        post_migrate.connect(_sync_groups, sender=self)

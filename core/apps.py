from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Shared mechanisms"

    def ready(self) -> None:
        # Connects the Celery signals that put task ids into log records (web and workers alike).
        from core import logs  # noqa: F401

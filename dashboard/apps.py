from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The top floor: pages that combine several apps (home, image page, consensus with the model's opinion)."""

    name = "dashboard"
    verbose_name = "Dashboard"

from django.apps import AppConfig


class LabscreenConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "labscreen"
    verbose_name = "Lab screen"

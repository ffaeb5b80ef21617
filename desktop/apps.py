from django.apps import AppConfig


class DesktopConfig(AppConfig):
    name = "desktop"
    default_auto_field = "django.db.models.BigAutoField"

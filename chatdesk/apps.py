from django.apps import AppConfig


class ChatdeskConfig(AppConfig):
    name = "chatdesk"
    verbose_name = "Accounts and API tokens"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chatdesk import checks, schema  # noqa: F401  (registers system checks and the OpenAPI auth scheme)

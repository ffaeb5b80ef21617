from django.apps import AppConfig


class DesktopConfig(AppConfig):
    name = "desktop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Give chats the computer tool and the computer-use system prompt (chats never imports desktop)."""
        # Imported here, as Django requires: models are not loaded when this module is imported.
        from chats.tools.computer_use import ComputerUse, register_computer_use
        from desktop import recordings  # noqa: F401 - connects its signal receiver
        from desktop.computer import computer_use_system_prompt
        from desktop.tools import ComputerTool

        register_computer_use(
            ComputerUse(tools=lambda chat: [ComputerTool(chat)], system_prompt=computer_use_system_prompt)
        )

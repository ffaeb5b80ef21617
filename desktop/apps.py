from django.apps import AppConfig


class DesktopConfig(AppConfig):
    name = "desktop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Give chats the computer tool, the computer-use system prompt and the workspace tools (bash, the
        text editor) of root chats: chats never imports desktop."""
        # Imported here, as Django requires: models are not loaded when this module is imported.
        from chats.tools.computer_use import ComputerUse, register_computer_use
        from chats.tools.workspace import register_workspace_tools
        from desktop import recordings  # noqa: F401 - connects its signal receiver
        from desktop.computer import computer_use_system_prompt
        from desktop.tools import ComputerTool
        from desktop.workspace import tools_for_workspace

        register_computer_use(
            ComputerUse(tools=lambda chat: [ComputerTool(chat)], system_prompt=computer_use_system_prompt)
        )
        register_workspace_tools(tools_for_workspace)

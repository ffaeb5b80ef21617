from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from agents.models import WorkspaceAgent
from agents.services import workspace_agent_command, workspace_agent_token_file_command
from chatdesk.admin import ShowsNewTokenOnceAdmin


@admin.register(WorkspaceAgent)
class WorkspaceAgentAdmin(ShowsNewTokenOnceAdmin):
    list_display = ["name", "owner", "status", "url", "display", "last_seen", "token_prefix"]
    search_fields = ["name", "owner__username"]
    fields = [
        "owner",
        "name",
        "token_prefix",
        "url",
        "display_width",
        "display_height",
        "last_seen",
        "created_at",
    ]
    readonly_fields = ["token_prefix", "url", "display_width", "display_height", "last_seen", "created_at"]

    @admin.display(description="Status")
    def status(self, agent: WorkspaceAgent) -> str:
        return agent.status

    @admin.display(description="Display")
    def display(self, agent: WorkspaceAgent) -> str:
        return f"{agent.display_width}x{agent.display_height}" if agent.display_width else "—"

    credential_kind = "Agent token"

    def token_usage(self, request: HttpRequest, obj: Any, token: str) -> str:
        # The token goes in a private file, never on a command line (visible to every local user).
        return (
            "# save the token in a file only you can read: paste it, press Enter, then Ctrl+D\n"
            f"{workspace_agent_token_file_command()}\n{workspace_agent_command(request=request)}"
        )

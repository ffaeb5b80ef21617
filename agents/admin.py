from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from agents.models import WorkspaceAgent


@admin.register(WorkspaceAgent)
class WorkspaceAgentAdmin(admin.ModelAdmin):
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

    def save_model(self, request: HttpRequest, obj: WorkspaceAgent, form: Any, change: bool) -> None:
        raw = None if change else obj.assign_new_token()
        super().save_model(request, obj, form, change)
        if raw:
            # Shown once: only the hash is stored.
            messages.warning(
                request,
                f"Token for {obj.name} (copy it now, it will not be shown again): {raw}",
            )
